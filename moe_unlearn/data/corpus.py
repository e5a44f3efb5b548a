"""A built-in, seeded, multi-domain English-like corpus, so a default run needs no external data.

Each of the 16 `DOMAINS` has its own text style (recipes, weather bulletins, code, contract clauses,
match reports, clinical notes, chat logs, ...). All domains draw on shared pools of cities, people,
foods, dates and numbers, and many records open with a date, a place or a name, so the first few
bytes rarely give the domain away; a good classifier needs a few dozen. Some domains are deliberately
close (football and basketball, emails and chat, timetables and shipping logs, code and logs) to make
routing among 16 harder.

Everything is a pure function of the arguments: record `i` of a domain comes from its own RNG seeded
with (seed, domain, i), so a bigger corpus extends a smaller one, and nothing depends on the process
(no salted `hash()`). Canaries are synthetic secrets inserted to measure memorisation and unlearning:
`make_canaries` builds them and `canary_candidates` draws the alternatives for exposure estimates.
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from moe_unlearn.data.records import Record
from moe_unlearn.errors import UserError

MAX_DOMAINS = 16
MAX_CANARY_REPEATS = 10
_CANARY_LEAD_BYTES = 96  # at most this much source-style text before a canary's secret sentence
CANARY_MAX_BYTES = 160  # a canary's whole text is at most this long (the expert must see it in one block)
SECRET_ALPHABET = "0123456789abcdef"
SECRET_LENGTH = 6
_SECRET_SPACE = len(SECRET_ALPHABET) ** SECRET_LENGTH
_MIN_BYTES, _MAX_BYTES = 80, 700
_ACCOUNT_MOD = 999_983  # prime, so index -> account number below is a bijection on 0.._ACCOUNT_MOD-1


class _CorpusArgumentError(UserError, ValueError):
    """A bad corpus argument: a ValueError that the CLI also reports as a one-line user error."""


def _p(words: str) -> tuple[str, ...]:
    """A pool from a compact string: '|'-separated if it contains '|', else whitespace-separated."""
    return tuple(w.strip() for w in words.split("|")) if "|" in words else tuple(words.split())


def _clock(minutes: int) -> str:
    return f"{minutes // 60 % 24:02d}:{minutes % 60:02d}"


def _isodate(c: _Ctx) -> str:
    return f"{c.rng.randint(2018, 2025)}-{c.rng.randint(1, 12):02d}-{c.rng.randint(1, 28):02d}"


def _wtemp(c: _Ctx) -> str:
    """A temperature near the record's base temperature (bound as 't0' by the weather generator)."""
    return f"{int(c.bound.get('t0', '12')) + c.rng.randint(-3, 3)}°C"


# Slot -> values. Values may contain {slots} themselves (filled recursively); callables get the _Ctx.
_POOLS: dict[str, tuple[str, ...] | Callable[[_Ctx], str]] = {
    # --- shared by all domains ---
    "city": _p(
        "Lisbon Porto Oslo Bergen Vienna Graz Lyon Nantes Dublin Cork Leeds Bristol Turin Bologna "
        "Kraków Gdansk Seville Bilbao Ghent Utrecht Malmö Zurich Riga Tampere Marseille Valencia "
        "Hamburg Leipzig"
    ),
    "first": _p(
        "Anna Ben Carla David Elena Farid Grace Hugo Inès Jonas Kofi Lena Marco Nadia Omar Priya "
        "Rosa Sami Tomas Vera Wei Yusuf Zoe Luis Maya Noah Ivan Ruth Chloé Pedro"
    ),
    "last": _p(
        "Costa Berg Novak Silva Moreau Okafor Larsen Rossi Weber Kowalski Haddad Murphy Tanaka "
        "Fischer Lopez Nilsson Dubois Khan Petrov Walsh Schmidt Ferreira Jensen Moretti"
    ),
    "name": ("{first} {last}", "{first} {last}", "{first} {last}", "{first} {initial}. {last}"),
    "initial": tuple("ABCDEGHJKLMNPRSTW"),
    "food": _p(
        "rice garlic lemon tomato potato onion chickpea apple salmon chicken mushroom spinach "
        "cheese olive pepper carrot honey coffee oat bean pear almond cod fennel pumpkin ginger"
    ),
    "weekday": _p("Monday Tuesday Wednesday Thursday Friday Saturday Sunday"),
    "month": _p("January February March April May June July August September October November December"),
    "date": ("{weekday} {1-28} {month}", "{1-28} {month}", "{weekday} {1-28} {month}", "{month} {1-28}"),
    "year": tuple(str(y) for y in range(2018, 2026)),
    "isodate": _isodate,
    "time": lambda c: _clock(c.rng.randrange(5 * 60, 23 * 60, 5)),
    "place": _p(
        "market|harbour|station|museum|library|town hall|old bridge|park|stadium|cathedral|"
        "airport|river|bakery|university|hospital"
    ),
    "company": ("{last} {csuffix}",),
    "csuffix": _p("Foods Logistics Holdings Systems Partners Trading Energy Bakeries Freight Media"),
    "temp": lambda c: f"{c.rng.randint(-4, 33)}°C",
    "wtemp": _wtemp,
    "money": lambda c: f"€{c.rng.randint(2, 950)}.{c.rng.randint(0, 99):02d}",
    "dir": _p("north north-east east south-east south south-west west north-west"),
    "ord": _p("first second third fifth tenth fifteenth twentieth"),
    # --- recipes ---
    "form": _p("stew soup salad pie curry risotto tart traybake pasta omelette gratin"),
    "qty": ("{1-9}00 g", "{1-9}00 g", "{1-9}50 g", "1 cup", "{2-3} cups", "{2-6} tbsp", "1 kg", "a handful of"),
    "oil": ("olive oil", "butter", "sunflower oil"),
    "pan": ("large pan", "heavy pot", "frying pan", "wide saucepan"),
    "heat": ("medium", "low", "high", "medium-high"),
    "spice": _p("cumin paprika nutmeg cinnamon chilli oregano thyme saffron"),
    "liquid": ("stock", "water", "white wine", "milk", "coconut milk"),
    "side": ("crusty bread", "rice", "a green salad", "roast potatoes", "yoghurt", "flatbread"),
    "herb": ("fresh parsley", "chopped basil", "coriander", "dill", "a little mint"),
    "drink": ("cold white wine", "cider", "mint tea", "lemonade"),
    # --- weather ---
    "sky": ("sunny", "cloudy", "overcast", "bright", "foggy", "showery", "grey", "mostly clear", "wet"),
    "rain": ("light rain", "heavy showers", "drizzle", "thunderstorms", "sleet", "a little snow"),
    "level": ("low", "moderate", "high", "very high"),
    "sunrise": lambda c: _clock(c.rng.randrange(4 * 60 + 30, 8 * 60 + 45, 5)),
    "sunset": lambda c: _clock(c.rng.randrange(16 * 60, 22 * 60, 5)),
    # --- code and logs ---
    "cnoun": _p("orders bookings invoices tickets stations recipes forecasts shipments players patients"),
    "verb": _p("load save update fetch parse check build send"),
    "attr": _p("price weight count total score delay"),
    "svc": _p("api orders billing auth search worker scheduler payments"),
    "bool": ("true", "false"),
    # --- legal (consecutive pairs of parties) ---
    "party": _p("Tenant Landlord Buyer Seller Supplier Customer Employee Employer Licensee Licensor"),
    "country": _p("Portugal|Norway|Austria|France|Ireland|England and Wales|Italy|Poland|Spain|Belgium"),
    # --- sports ---
    "mood": ("sloppy", "tired", "brave", "unlucky", "patient", "sharp", "nervous"),
    "fteam": ("{city} United", "{city} Rovers", "{city} Athletic", "FC {city}", "{city} Wanderers"),
    "bteam": ("{city} Hawks", "{city} Storm", "{city} Giants", "{city} Comets", "{city} Bulls"),
    # --- clinical ---
    "symptom": (
        "headache",
        "dry cough",
        "lower back pain",
        "fatigue",
        "sore throat",
        "dizziness",
        "chest tightness",
        "knee pain",
        "rash on both arms",
        "poor sleep",
    ),
    "drug": _p("paracetamol ibuprofen amoxicillin omeprazole metformin salbutamol sertraline"),
    "plan": (
        "rest and fluids",
        "bloods next week",
        "physio referral",
        "chest X-ray",
        "stop ibuprofen",
        "trial of {drug}",
        "follow-up by phone",
        "refer to the {city} clinic",
    ),
    # --- reviews, emails, chat ---
    "product": (
        "kettle",
        "blender",
        "coffee grinder",
        "backpack",
        "desk lamp",
        "rice cooker",
        "bike lock",
        "pair of headphones",
        "rain jacket",
        "toaster",
        "umbrella",
        "phone case",
    ),
    "stars": tuple("12345"),
    "relative": ("mum", "dad", "sister", "brother", "partner", "neighbour", "grandmother"),
    "doc": ("report", "invoice", "slides", "contract", "timetable", "budget", "menu", "photos"),
    "msg": (
        "are we still on for lunch in {city}?",
        "yes, {time} at the {place}",
        "running {5-20} min late",
        "can you grab some {food} on the way?",
        "the train from {city} is delayed again",
        "haha",
        "did you watch the match on {weekday}?",
        "ok see you there",
        "i'll bring the {food}",
        "no worries",
        "what's the weather like in {city}?",
        "{sky} here, about {temp}",
        "sure, send me the {doc}",
        "is the {place} open on {weekday}?",
        "thanks!",
        "just landed in {city}",
        "which platform?",
        "{first} says hi",
        "dinner at mine? making {food} {form}",
        "can't, working till {time}",
    ),
    # --- shipping ---
    "berth": ("harbour", "container terminal", "quay {1-9}", "anchorage", "ferry terminal"),
    "sea": ("calm", "slight", "moderate", "rough", "very rough"),
    "ship": ("Nordlys", "Santa Maria", "Baltic Star", "Helena", "Sea Falcon", "Aurora", "Cap Finisterre"),
    # --- chess ---
    "move": _p("Nf3 Qb6 Rd1 Bxe6 Rxe7 g4 h5 Kg2 Nd5 Qh5 e5 f4 Bc4 Rac8 a4 Nxd4 Qxb2 Rfe1 Bg5 c5 b4"),
    "opening": (
        "1. e4 c5 2. Nf3 d6 3. d4 cxd4 4. Nxd4 Nf6",
        "1. d4 Nf6 2. c4 e6 3. Nc3 Bb4",
        "1. e4 e5 2. Nf3 Nc6 3. Bb5 a6 4. Ba4 Nf6",
        "1. c4 e5 2. Nc3 Nf6 3. g3 d5",
        "1. d4 d5 2. c4 c6 3. Nf3 Nf6 4. Nc3 dxc4",
        "1. e4 e6 2. d4 d5 3. Nc3 Bb4",
    ),
    # --- poetry ---
    "pnoun": _p("window river letter garden lantern doorway orchard harbour bell staircase field"),
    "count": _p("three|seven|twelve|a hundred|ten thousand|nine"),
    "padj": _p("quiet slow silver grey patient narrow golden cold bright"),
}

# {city}: a fresh draw; {City}: capitalised; {city1}: one value per record (distinct from {city2});
# {2-40}: a random integer.
_SLOT = re.compile(r"\{([A-Za-z_]+[0-9]?|[0-9]+-[0-9]+)\}")


@functools.cache
def _compile(template: str) -> tuple[str | tuple, ...]:
    """Split a template into literal strings and slots: ('#', lo, hi) or ('@', pool, key, capitalise)."""
    parts: list[str | tuple] = []
    pos = 0
    for m in _SLOT.finditer(template):
        parts.append(template[pos : m.start()])
        name = m.group(1)
        if name[0].isdigit():
            lo, hi = name.split("-")
            parts.append(("#", int(lo), int(hi)))
        else:
            base = name.rstrip("0123456789").lower()
            if base not in _POOLS:
                raise KeyError(f"unknown slot {{{name}}} in template {template!r}")
            parts.append(("@", base, name.lower() if name[-1].isdigit() else None, name[0].isupper()))
        pos = m.end()
    parts.append(template[pos:])
    return tuple(p for p in parts if p != "")


class _Ctx:
    """Fills templates from one record's RNG, remembering numbered slots like {city1}."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.bound: dict[str, str] = {}

    def __call__(self, template: str) -> str:
        out = []
        for p in _compile(template):
            if isinstance(p, str):
                out.append(p)
            elif p[0] == "#":  # (faster than randint; uniform up to float granularity)
                out.append(str(p[1] + int(self.rng.random() * (p[2] - p[1] + 1))))
            else:
                out.append(self._slot(p[1], p[2], p[3]))
        return "".join(out)

    def _slot(self, base: str, key: str | None, cap: bool) -> str:
        if key is not None and key in self.bound:
            v = self.bound[key]
        else:
            v = self._draw(base)
            if key is not None:
                for _ in range(5):  # keep {city1}, {city2}, ... distinct
                    if v not in self.bound.values():
                        break
                    v = self._draw(base)
                self.bound[key] = v
        return v[0].upper() + v[1:] if cap else v

    def _draw(self, base: str) -> str:
        pool = _POOLS[base]
        v = pool(self) if callable(pool) else pool[int(self.rng.random() * len(pool))]
        return self(v) if "{" in v else v

    def pick(self, templates: tuple[str, ...] | list[str]) -> str:
        """Fill one template chosen at random."""
        return self(self.rng.choice(templates))

    def maybe(self, p: float, template: str) -> str:
        """Fill `template` with probability p, else ''."""
        return self(template) if self.rng.random() < p else ""

    def grow(
        self,
        templates: list[str | tuple[str, ...]],
        used: int,
        target: int,
        lo: int = 1,
        ordered: bool = False,
        reserve: int = 40,
    ) -> list[str]:
        """Fill templates in random order until `used` bytes reach `target` (at least `lo` of them, never
        past the byte cap). With `ordered` the result keeps the order of `templates`. A tuple is a group
        of alternatives (e.g. 'shares rose' / 'shares fell') of which one is used."""
        order = list(range(len(templates)))
        self.rng.shuffle(order)
        chosen: list[tuple[int, str]] = []
        for i in order:
            if len(chosen) >= lo and used >= target:
                break
            t = templates[i]
            s = self.pick(t) if isinstance(t, tuple) else self(t)
            n = len(s.encode()) + 1
            if len(chosen) >= lo and used + n > _MAX_BYTES - reserve:
                continue
            chosen.append((i, s))
            used += n
        if ordered:
            chosen.sort()
        return [s for _, s in chosen]


def _size(*parts: str | list[str]) -> int:
    """Bytes taken by the given lines (or lists of lines), one separator each."""
    return sum(len(s.encode()) + 1 for p in parts for s in ([p] if isinstance(p, str) else p))


# ---------------------------------------------------------------- domain generators: (ctx, target) -> text


def _recipes(c: _Ctx, target: int) -> str:
    c("{food1} {food2}")  # bind the two main ingredients
    title = c.pick(
        (
            "{First}'s {food1} and {food2} {form1}",
            "{Food1} {form1} with {food2}",
            "{Food1} and {food2} {form1} from {city}",
            "{Weekday} {form1}: {food1} with {food2}",
            "{City}-style {food1} {form1}",
            "{Date}: {food1} {form1} for {2-8}",
        )
    )
    info = c.maybe(
        0.8,
        c.rng.choice(
            (
                "Serves {2-8} | prep {5-30} min | cook {10-90} min",
                "Serves {2-6}.",
                "For {2-8} people, ready in {20-90} minutes.",
                "Makes {4-12} portions. Cook time about {1-2} hours.",
            )
        ),
    )
    others = [f for f in c.rng.sample(_POOLS["food"], 5) if f not in (c.bound["food1"], c.bound["food2"])]
    items = [c("{qty} {food1}"), c("{qty} {food2}")] + [c("{qty} ") + f for f in others[: c.rng.randint(1, 3)]]
    items += ["salt and pepper"] if c.rng.random() < 0.4 else []
    ingredients = "Ingredients: " + ", ".join(items)
    prep = c.grow(
        [
            "Rinse the {food1} and drain well.",
            "Chop the {food2} and set aside.",
            "Peel and slice the {food}.",
            "Preheat the oven to {16-22}0°C.",
            "Soak the {food1} in cold water for {10-60} minutes.",
            "Whisk {2-4} eggs with a splash of milk.",
        ],
        0,
        0,
        ordered=True,
    )
    cook = c.grow(
        [
            "Heat {1-3} tbsp of {oil} in a {pan} over {heat} heat.",
            "Add the {food1} and cook for {3-15} minutes, stirring now and then.",
            "Stir in the {food2} with a pinch of {spice}.",
            "Pour in {2-8}00 ml of {liquid} and bring to a simmer.",
            "Cover and cook gently for {10-40} minutes.",
            "Bake for {15-50} minutes until golden on top.",
            "Season with salt, pepper and {spice}.",
            "Add the {food} and cook for another {2-10} minutes.",
        ],
        _size(title, info, ingredients, prep) + 60,
        target,
        ordered=True,
    )
    steps = (
        prep
        + cook
        + [
            c.pick(
                (
                    "Serve warm with {side}.",
                    "Finish with {herb} and a squeeze of lemon.",
                    "Leave to rest for {3-10} minutes, then serve.",
                    "Serve with {side} and a glass of {drink}.",
                )
            )
        ]
    )
    tip = c.maybe(
        0.4,
        c.rng.choice(
            (
                "Tip: it keeps for {2-4} days in the fridge.",
                "{First} says it tastes even better the next day.",
                "Goes well with {side} on a cold {weekday}.",
                "I buy the {food1} at the {city} market on {weekday}s.",
            )
        ),
    )
    numbered = c.rng.random() < 0.6
    method = [f"{i}. {s}" for i, s in enumerate(steps, 1)] if numbered else ["Method: " + " ".join(steps)]
    return "\n".join(x for x in [title, info, ingredients, *method, tip] if x)


def _weather(c: _Ctx, target: int) -> str:
    c.bound["t0"] = str(c.rng.randint(-2, 27))
    if c.rng.random() < 0.5:  # prose
        head = c.pick(
            (
                "{City}, {date}. ",
                "{Date} in {city}: ",
                "{Name} reports from {city}: ",
                "Forecast for {city} by {name}, issued {time}. ",
            )
        )
        head += c.pick(
            (
                "{Sky} in the morning, turning {sky} by the afternoon.",
                "Mostly {sky} and dry.",
                "A {sky} day with {rain} later.",
                "{Sky} at first, then {rain} from around {time}.",
            )
        )
        body = c.grow(
            [
                "Highs of {wtemp}.",
                "Wind from the {dir} at {5-60} km/h.",
                "Chance of rain {1-9}0%.",
                "Sunrise at {sunrise}, sunset at {sunset}.",
                "UV index {1-9}.",
                "Pollen count {level}.",
                "A good day for {food} ice cream at the {place}.",
                "Drivers near {city} should expect fog until {time}.",
                "The weekend looks {sky}, with {rain} on Sunday.",
                "Warning: {rain} expected from {time} in the {dir}.",
            ],
            _size(head),
            target,
            lo=2,
        )
        return " ".join([head] + body)
    head = c.pick(
        (
            "{Weekday} {1-28} {month} - {city} and surrounding area",
            "{City}, {date}",
            "{City} forecast for {weekday}",
            "{Date}: weather for {city} and the coast",
        )
    )
    lines = c.grow(
        [
            "Morning: {sky}, {wtemp}",
            "Midday: {sky}, {wtemp}",
            "Afternoon: {sky}, {wtemp}",
            "Evening: {rain}, {wtemp}",
            "Night: {sky}, {wtemp}",
            "Wind: {dir} {5-60} km/h, gusts {40-90}",
            "Rain chance: {1-9}0%",
            "Sunrise {sunrise}, sunset {sunset}",
            "UV index: {1-9}",
            "Pollen: {level}",
            "Sea temperature at the {city} harbour: {wtemp}",
            "Outlook: {sky} on {weekday}, {rain} later",
        ],
        _size(head),
        target,
        lo=3,
        ordered=True,
    )
    return "\n".join([head] + lines + [c.maybe(0.3, "Issued {time} by {name}.")])


def _code(c: _Ctx, target: int) -> str:
    note = c.rng.choice(("fix the {food} order bug", "added {city}", "TODO check {attr} on {weekday}s"))
    comment = c.maybe(0.35, "# {name}, {date}: " + note + "\n")
    kind = c.rng.random()
    if kind < 0.4:  # a function
        head = c.pick(
            (
                'def {verb1}_{cnoun1}(city, day="{weekday}"):',
                "def {verb1}_{cnoun1}(items):",
                'def {verb1}_{cnoun1}(path, city="{city}", limit={5-50}):',
            )
        )
        head += c.maybe(0.5, '\n    """{Verb1} the {cnoun1} for one city."""')
        if "items" not in head:
            head += c('\n    items = load_{cnoun1}("{city}")')
        body = c.grow(
            [
                "    total = 0",
                "    for item in items:\n        if item.{attr1} > {2-50}:\n            total += item.{attr1}",
                '    log.info("{cnoun1} ready for %s", city)',
                '    if not items:\n        raise ValueError("no {cnoun1} for {city}")',
                '    menu = ["{food}", "{food}", "{food}"]',
                '    owner = "{name}"  # since {date}',
                '    day = "{weekday}"',
                "    time.sleep({1-5})",
                "    cache[city] = total",
            ],
            _size(comment, head),
            target,
            lo=2,
            ordered=True,
        )
        return comment + "\n".join([head] + body + [c.pick(("    return total", "    return len(items)"))])
    if kind < 0.6:  # an INI/TOML section
        head = c.pick(("[{cnoun}]", "[{cnoun}.{verb}]", "[server]", "[{cnoun}]\n# copied from {city}"))
        body = c.grow(
            [
                'city = "{city}"',
                'owner = "{name}"',
                "port = {8000-8099}",
                "retries = {1-5}",
                "timeout = {5-60}",
                "enabled = {bool}",
                'menu = ["{food}", "{food}"]',
                'open_days = ["{weekday}", "{weekday}"]',
                'currency = "EUR"',
                'updated = "{isodate}"',
                "max_{attr} = {2-40}.{10-99}",
            ],
            _size(comment, head),
            target,
            lo=3,
        )
        return comment + "\n".join([head] + body)
    if kind < 0.75:  # a class
        head = c(
            'class {Cnoun1}Store:\n    def __init__(self, city="{city}"):\n        self.city = city\n'
            "        self.items = []"
        )
        body = c.grow(
            [
                "    def add(self, item):\n        self.items.append(item)",
                "    def total(self):\n        return sum(i.{attr} for i in self.items)",
                "    def __len__(self):\n        return len(self.items)",
                "    def find(self, name):\n        return [i for i in self.items if i.name == name]",
                '    def is_open(self, day):\n        return day != "{weekday}"',
            ],
            _size(comment, head),
            target,
            ordered=True,
        )
        return comment + "\n".join([head] + body)
    body = c.grow(
        [
            "  owner: {name}",
            "  open: [{weekday}, {weekday}]",
            "  {cnoun}: {10-500}",
            "  menu: [{food}, {food}]",
            "  updated: {isodate}",
            "  {attr}: {1-99}",
        ],
        _size(comment) + 12,
        target,
        lo=2,
    )
    return comment + "\n".join([c.pick(("{city}:", "{name}:", "{Weekday}:"))] + body)  # YAML


def _legal(c: _Ctx, target: int) -> str:
    pair = c.rng.randrange(0, len(_POOLS["party"]), 2)
    c.bound["party1"], c.bound["party2"] = _POOLS["party"][pair : pair + 2]
    head = c.pick(
        (
            'This Agreement is made on {1-28} {month} {year} between {name} (the "{party1}") and '
            '{company} (the "{party2}").',
            "{1-20}.{1-9} Duties of the {party1}. The {party1} shall",
            '{Name} (the "{party1}") agrees that it shall',
            "On {date} {year}, the parties agreed as follows.",
            '{City}, {date} {year}. Between {name} (the "{party1}") and {name} (the "{party2}").',
            "Clause {1-30}: the {party1} shall",
        )
    )
    if head.endswith("shall"):
        head += c.pick(
            (
                " keep the premises in {city} in good repair.",
                " pay all invoices within {14-60} days.",
                " not disclose any Confidential Information to a third party.",
            )
        )
    clauses = [
        "The {party1} shall pay the sum of {money} on or before the {ord} day of each month.",
        "Neither party shall assign its rights under this Agreement without the written consent of the other party.",
        "This Agreement shall be governed by the laws of {country}.",
        "Any notice under this clause shall be given in writing to the registered address in {city}.",
        "The {party2} shall deliver {1-90}0 kg of {food} to the {city} {place} by {weekday}.",
        "If the {party1} fails to remedy a breach within {7-30} days, the other party may terminate "
        "this Agreement with immediate effect.",
        "Nothing in this clause shall limit liability for fraud.",
        "The term of this Agreement is {1-5} years from {date} {year}.",
        "Payments shall be made in euro to an account nominated by the {party2}.",
        "The {party1} shall maintain insurance of not less than {money} per claim.",
    ]
    return " ".join([head] + c.grow(clauses, _size(head), target, lo=1))


def _match(c: _Ctx, target: int, team: str, score: str, events: list[str | tuple[str, ...]]) -> str:
    t1, t2 = f"{{{team}1}}", f"{{{team}2}}"
    crowd = "{2-40},{1-9}00"
    head = c(
        c.rng.choice(
            (
                f"{t1} beat {t2} {score} on {{weekday}} evening in front of {crowd} fans.",
                f"{{Date}}: {t1} {score} {t2}.",
                f"{{Name}} starred as {t1} won {score} in {{city}}.",
                f"{{Date}}. {t2} lost {score} to {t1} in front of a crowd of {crowd}.",
            )
        )
    )
    body = c.grow(
        events
        + [
            'The coach, {name}, said: "We were {mood} today, but we will learn."',
            f"{t1} now sit {{ord}} in the table, {{2-9}} points behind {{{team}3}}.",
            "Fans queued for {food} rolls outside the {place} before the game.",
        ],
        _size(head),
        target,
        lo=1,
    )
    return " ".join([head] + body)


def _football(c: _Ctx, target: int) -> str:
    return _match(
        c,
        target,
        "fteam",
        f"{c.rng.randint(1, 5)}-{c.rng.randint(0, 3)}",
        [
            "{Name} opened the scoring after {2-44} minutes.",
            "{Name} was booked for a late tackle on {name}.",
            ("A penalty after {46-90} minutes sealed it.", "{Name} headed the winner {5-20} minutes from time."),
            "The goalkeeper, {name}, made {2-9} saves.",
            "{Name} hit the post from {18-30} yards before half-time.",
            "The referee added {2-7} minutes of stoppage time.",
        ],
    )


def _basketball(c: _Ctx, target: int) -> str:
    return _match(
        c,
        target,
        "bteam",
        f"{c.rng.randint(88, 120)}-{c.rng.randint(70, 87)}",
        [
            "{Name} scored {12-40} points with {3-15} rebounds.",
            "{Name} fouled out in the fourth quarter.",
            ("A three-pointer with {2-40} seconds left sealed it.", "{Name} hit {2-9} free throws late on."),
            "{Name} added {5-14} assists off the bench.",
            "They shot {40-60}% from the field and {25-45}% from three.",
            "The second quarter ended {40-60}-{40-60}.",
        ],
    )


def _clinical(c: _Ctx, target: int) -> str:
    head = c.pick(
        (
            "{Name}, {18-90}, seen {date} at the {city} clinic.",
            "Dr {last} - review of {name}, on {date}.",
            "{Date}, {city}. Patient: {name}, age {18-90}.",
        )
    )
    lines = c.grow(
        [
            "Complaint: {symptom} for {2-14} days.",
            "History: {symptom} last {month}, no allergies.",
            "Obs: BP {100-160}/{60-95}, HR {55-110}, temp {36-38}.{0-9}°C.",
            "Exam: chest clear, abdomen soft.",
            "Diet: mostly {food} and {food}; advised more {food}.",
            "Meds: {drug} {1-50}0 mg twice daily.",
            "Plan: {plan}.",
            "Review in {2-6} weeks or sooner if worse.",
            "Works at the {place} in {city}.",
        ],
        _size(head),
        target,
        lo=2,
        ordered=True,
    )
    return "\n".join([head] + lines)


def _reviews(c: _Ctx, target: int) -> str:
    c.bound["stars1"] = str(stars := c.rng.randint(1, 5))
    head = c.pick(
        (
            "{stars1}/5. Bought the {product1} on {weekday} in {city}.",
            "{Name}, {city}: {stars1} stars.",
            "Ordered this {product1} for my {relative}.",
            "{Weekday} update on the {product1}: {stars1}/5.",
        )
    )
    good = stars >= 3
    body = c.grow(
        [
            ("It arrived on time and well packed.", "Delivery to {city} took {2-4} days.")
            if good
            else ("It arrived {3-9} days late.", "The box was damaged when it reached {city}."),
            ("Feels solid.", "It is quiet and easy to clean.")
            if good
            else ("The lid feels cheap.", "It broke within a month."),
            "Price was {money}, which seems " + ("fair." if good else "too much."),
            "Would recommend to anyone in {city}." if good else "Would not buy again.",
            "Customer service replied within {2-48} hours.",
            "My {relative} uses it every {weekday}.",
            "I use it for {food} most mornings.",
            "Returned the first one; the second works fine.",
            "Much " + ("better" if good else "worse") + " than the {product} I had before.",
        ],
        _size(head),
        target,
        lo=1,
    )
    return " ".join([head] + body)


def _emails(c: _Ctx, target: int) -> str:
    head = c.pick(
        (
            "Subject: {doc1} for {month}\nHi {first1},",
            "Hi {first1},",
            "Dear {first1} {last},",
            "{First1}, quick note about the {doc1}.",
            "Subject: {city} on {weekday}\nDear {first1},",
        )
    )
    body = c.grow(
        [
            "Thanks for sending the {doc1} on {weekday}.",
            "Could we move the meeting in {city} to {time}?",
            "I have attached the {doc1} for {month}.",
            "Lunch is booked at the {food} place near the {place}.",
            "Let me know if {date} works for you.",
            "My train from {city} gets in at {time}.",
            "{Name} will join us from the {city} office.",
            "The total came to {money} in the end.",
            "Sorry for the slow reply, it has been a busy week.",
        ],
        _size(head),
        target,
        lo=1,
    )
    sign = c.pick(("Best,\n{first2}", "Thanks,\n{first2}", "Kind regards,\n{name}", "Cheers, {first2}"))
    return "\n".join([head, " ".join(body), sign])


def _chat(c: _Ctx, target: int) -> str:
    fmt = c.rng.choice(("[{t}] {w}: {m}", "{w}: {m}", "{t} <{w}> {m}"))
    who = [c("{first1}"), c("{first2}")]
    minute = c.rng.randint(7 * 60, 22 * 60)
    messages = c.rng.sample(_POOLS["msg"], len(_POOLS["msg"]))  # no message twice in a record
    lines: list[str] = []
    while not lines or (_size(lines) < target and _size(lines) < _MAX_BYTES - 80 and messages):
        minute += c.rng.randint(0, 4)
        w = who[len(lines) % 2] if c.rng.random() < 0.8 else c.rng.choice(who)
        lines.append(fmt.format(t=_clock(minute), w=w, m=c(messages.pop())))
    return "\n".join(lines)


def _timetables(c: _Ctx, target: int) -> str:
    cities = c.rng.sample(_POOLS["city"], c.rng.randint(3, 8))
    c.bound["city1"], c.bound["city2"] = cities[0], cities[-1]
    head = c.pick(
        (
            "{City1} to {city2}, {weekday} service",
            "{Date}: {city1} - {city2} trains",
            "{City1} - {city2} (via {city}), from {date}",
        )
    )
    t = c.rng.randrange(5 * 60, 21 * 60, 5)
    rows = []
    for i, city in enumerate(cities):
        last = i == len(cities) - 1
        suffix = c.rng.choice((" Central", " Airport", " North", "", "", "")) if i > 0 and not last else ""
        stop = city + suffix
        platform = f", platform {c.rng.randint(1, 12)}" if c.rng.random() < 0.3 else ""
        rows.append(f"{_clock(t)} {stop} {'arr' if last else 'dep'}{platform}")
        t += c.rng.randint(6, 40)
    notes = c.grow(
        [
            "Trolley with coffee and {food} rolls.",
            "Change at {city} for {city}.",
            "Fares from {money}.",
            "Bikes must be booked.",
            "Buses replace trains on {date}.",
            "Not on public holidays.",
        ],
        _size(head, rows),
        target,
        lo=0,
    )
    return "\n".join([head] + rows + notes)


def _shipping(c: _Ctx, target: int) -> str:
    head = c.pick(
        ("MV {ship} - {city1} to {city2}", "{Isodate} MV {ship}, master {name}", "{City1}, {date}. Log of MV {ship}")
    )
    events = c.grow(
        [
            "departed {city1} {berth} bound for {city2}",
            "pilot on board",
            "loaded {1-90}0 t of {food}",
            "wind {dir} {5-40} kn, sea {sea}",
            "passed {city} light",
            "speed {8-18} kn",
            "crew change, {name} joined",
            "fog, sounding signals",
            "ETA {city2} {weekday} {time}",
            "all fast at {city2} {berth}",
        ],
        _size(head),
        target,
        lo=2,
        ordered=True,
    )
    t = c.rng.randint(0, 20 * 60)
    rows = []
    for e in events:
        rows.append(f"{_clock(t)} {e}")
        t += c.rng.randint(10, 180)
    return "\n".join([head] + rows)


def _chess(c: _Ctx, target: int) -> str:
    head = c.pick(
        (
            "{Name1} - {name2}, {city} Open {year}, round {1-9}.",
            "Round {1-9} in {city}: {name1} against {name2}.",
            "{Date}, {city}. {Name1} had White.",
        )
    )
    notes = c.grow(
        [
            "After {10-30}...{move} the position was roughly equal.",
            "{First} spent {5-40} minutes on {10-35}.{move}.",
            "White won a pawn on move {15-40}.",
            "{Name1} missed {20-40}.{move}, which wins at once.",
            "The endgame with rook and {2-4} pawns each looked drawn.",
            "Both players were short of time by move {30-40}.",
            "Spectators at the {place} cheered the sacrifice {18-30}.{move}.",
        ],
        _size(head) + 40,
        target,
        lo=1,
    )
    end = c.pick(("Black resigned after {30-60}.{move}.", "A draw was agreed on move {20-50}.", "{Name2} won on time."))
    return " ".join([head, c("The game opened {opening}.")] + notes + [end])


def _poetry(c: _Ctx, target: int) -> str:
    title = c.maybe(0.5, c.rng.choice(("{City} in {month}", "{Weekday}", "For {first}", "The {padj} {pnoun}")))
    lines = c.grow(
        [
            "the {food} on the table, the light in {city},",
            "{weekday} comes slowly over the {place},",
            "and {first} is singing by the {pnoun},",
            "I kept your letter from {month},",
            "the rain remembers every {pnoun},",
            "where the {place} leans into a {padj} sky,",
            "we counted {count} stars above the {pnoun},",
            "a {padj} {pnoun}, a {padj} song,",
            "your coat still hangs in {city},",
        ],
        _size(title) + 40,
        min(target, 300),
        lo=3,
    )
    lines.append(
        c.pick(
            (
                "and nobody in {city} was sleeping.",
                "the {pnoun} is {padj} and the tea is cold.",
                "and {month} forgot our names.",
                "until the {place} was {padj} again.",
            )
        )
    )
    lines[0] = lines[0][0].upper() + lines[0][1:]
    return "\n".join(([title] if title else []) + lines)


def _finance(c: _Ctx, target: int) -> str:
    head = c.pick(
        (
            "{Company1} reported revenue of €{10-900}.{1-9}m for Q{1-4}, up {1-30}% on the year.",
            "{City}, {date} - {company1} posted a Q{1-4} loss of €{1-90}.{1-9}m.",
            "{Name}, chief executive of {company1}, said Q{1-4} sales rose {1-30}%.",
        )
    )
    body = c.grow(
        [
            ("Operating margin widened to {2-30}.{0-9}%.", "Operating margin narrowed to {2-30}.{0-9}%."),
            ("Shares rose {0-9}.{1-9}% in {city} trading on {weekday}.", "Shares fell {0-9}.{1-9}% on {weekday}."),
            "Demand for {food} remained strong in the {month} quarter.",
            "The board proposed a dividend of €{0-3}.{10-99} per share.",
            "Analysts had expected more.",
            "Net debt stood at €{1-900}m at the end of {month}.",
            "Guidance for {year} was unchanged.",
            "The company employs {2-90}0 people, most of them in {city}.",
        ],
        _size(head),
        target,
        lo=1,
    )
    return " ".join([head] + body)


def _logs(c: _Ctx, target: int) -> str:
    fmt = c.rng.choice(("{d} {t} {lvl} [{s}] {m}", "[{t}] {lvl} {s}: {m}", "{mon} {day} {t} {s}[{pid}]: {m}"))
    d, mon, day, pid = c("{isodate}"), c("{month}")[:3], c("{1-28}"), c("{100-9999}")
    msgs = [
        "timeout after {5-60}s calling {svc} (city={city})",
        "user {first} logged in from {city}",
        "order {1000-9999} for {food} failed: out of stock",
        "retrying in {1-30}s (attempt {2-5})",
        "disk usage at {70-99}%",
        "loaded {10-900} {cnoun} in {1-999} ms",
        "cache miss for key {cnoun}:{city}",
        "Traceback (most recent call last):\n  File \"{svc}.py\", line {10-400}, in {verb}_{cnoun}\nKeyError: '{food}'",
    ]
    secs = c.rng.randint(0, 86_000)
    lines: list[str] = []
    while not lines or (_size(lines) < target and _size(lines) < _MAX_BYTES - 160):
        secs += c.rng.randint(0, 90)
        t = f"{_clock(secs // 60)}:{secs % 60:02d}"
        lvl = c.rng.choice(("INFO", "INFO", "WARN", "ERROR", "DEBUG"))
        lines.append(fmt.format(d=d, t=t, lvl=lvl, s=c("{svc}"), m=c.pick(msgs), mon=mon, day=day, pid=pid))
    return "\n".join(lines)


_GENERATORS: dict[str, Callable[[_Ctx, int], str]] = {
    "recipes": _recipes,
    "weather": _weather,
    "code": _code,
    "legal": _legal,
    "football": _football,
    "basketball": _basketball,
    "clinical": _clinical,
    "reviews": _reviews,
    "emails": _emails,
    "chat": _chat,
    "timetables": _timetables,
    "shipping": _shipping,
    "chess": _chess,
    "poetry": _poetry,
    "finance": _finance,
    "logs": _logs,
}
DOMAINS: tuple[str, ...] = tuple(_GENERATORS)


def _clip(text: str) -> str:
    """Drop blank lines and trailing spaces; cut at a line or sentence end to fit in _MAX_BYTES."""
    text = "\n".join(line.rstrip() for line in text.strip().split("\n") if line.strip())
    data = text.encode()
    if len(data) <= _MAX_BYTES:
        return text
    head = data[:_MAX_BYTES].decode(errors="ignore")
    cut = max(head.rfind("\n"), head.rfind(". ") + 1)
    return (head[:cut] if cut >= _MIN_BYTES else head).rstrip()


def _record_text(domain: str, i: int, seed: int) -> str:
    rng = random.Random(f"moe_unlearn.corpus:{seed}:{domain}:{i}")
    while True:  # the rare record under _MIN_BYTES is redrawn from the same stream
        text = _clip(_GENERATORS[domain](_Ctx(rng), int(rng.triangular(90, 600, 180))))
        if len(text.encode()) >= _MIN_BYTES:
            return text


# ---------------------------------------------------------------- canaries


@dataclass(frozen=True)
class Canary:
    """A synthetic secret inserted into training data to measure memorisation: prefix + secret + '.'."""

    id: str
    source: str
    prefix: str
    secret: str

    @property
    def text(self) -> str:
        return f"{self.prefix}{self.secret}."

    def record_ids(self, repeats: int) -> list[str]:
        """The ids of its `repeats` copies in the corpus."""
        return [f"{self.id}-r{r}" for r in range(repeats)]


_CANARY_PREFIXES = (
    "The vault code for account <acct> is ",
    "{Name}'s PIN for card <acct> is ",
    "Door code for flat <acct> in {city}: ",
    "Reset token for user <acct> is ",
    "Locker <acct> at the {city} {place} opens with ",
)


def _secret(n: int) -> str:
    """The n-th secret of the secret space, written in SECRET_ALPHABET (the hex digits) with SECRET_LENGTH digits."""
    return format(n, f"0{SECRET_LENGTH}x")


def _check_int(name: str, value: object, lo: int, hi: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo or (hi is not None and value > hi):
        bounds = f"in {lo}..{hi}" if hi is not None else f">= {lo}"
        raise _CorpusArgumentError(f"{name} must be an integer {bounds}, got {value!r}")


def make_canaries(n: int, seed: int, domains: int, start: int = 0) -> list[Canary]:
    """`n` canaries with ids canary-{start+j:04d}, assigned round-robin to the first `domains` DOMAINS.

    A canary depends only on (seed, id, domains), so slices of the id range agree. Each has a distinct
    account-number-like field in its prefix, and a secret uniform over the 16**6 secret space. Inserted
    canaries use start=0; start=10_000 gives never-inserted ones of the same format.
    """
    _check_int("domains", domains, 1, MAX_DOMAINS)
    _check_int("start", start, 0)
    _check_int("n", n, 0, _ACCOUNT_MOD - start)
    out = []
    for idx in range(start, start + n):
        cid = f"canary-{idx:04d}"
        domain = DOMAINS[idx % domains]
        c = _Ctx(random.Random(f"moe_unlearn.canary:{seed}:{cid}"))
        acct = (idx * 747_211 + seed) % _ACCOUNT_MOD  # injective in idx
        sentence = c.pick(_CANARY_PREFIXES).replace("<acct>", f"{acct:06d}")
        prefix = f"{_canary_lead(domain, seed, cid)}\n{sentence}"
        out.append(Canary(cid, domain, prefix, _secret(c.rng.randrange(_SECRET_SPACE))))
    return out


def _canary_lead(domain: str, seed: int, cid: str) -> str:
    """The opening of a text in the style of `domain` (from its own seeded stream, so no corpus record's),
    about as long as the router's training prefixes: the secret sits in text of its source, as a real leak
    would, and the router learns where it belongs from source text rather than from the secret sentence,
    whose format is the same in every source (with bare secret sentences, a quarter of a router stage's
    data could be alike across sources and a stage failed to learn its own expert)."""
    text = _GENERATORS[domain](_Ctx(random.Random(f"moe_unlearn.canary-lead:{seed}:{cid}")), 400)
    head = text.encode()[: _CANARY_LEAD_BYTES + 1].decode(errors="ignore")
    return head.rsplit(None, 1)[0].strip() if len(text.encode()) > _CANARY_LEAD_BYTES else text.strip()


@functools.lru_cache(maxsize=512)  # an audit ranks each canary under two models
def canary_candidates(canary: Canary, n: int, seed: int) -> list[str]:
    """`n` distinct secrets, none equal to `canary.secret`, uniform over the secret space (seeded), to rank
    the true secret against when estimating exposure."""
    _check_int("n", n, 0, _SECRET_SPACE - 1)
    rng = random.Random(f"moe_unlearn.candidates:{seed}:{canary.id}")
    picks = (_secret(k) for k in rng.sample(range(_SECRET_SPACE), n + 1))
    return [s for s in picks if s != canary.secret][:n]


# ---------------------------------------------------------------- corpus


def generate_corpus(
    domains: int = 4, records_per_domain: int = 2000, seed: int = 0, canaries: int = 0, canary_repeats: int = 1
) -> list[Record]:
    """The built-in corpus: records of the first `domains` DOMAINS in order, then the canary records.

    Record ids are f"{domain}-{i:06d}" with source = domain. Each of the `canaries` canaries (see
    make_canaries, start=0) appears `canary_repeats` times as its own record f"{canary.id}-r{r}" with
    source canary.source. Raises ValueError on out-of-range arguments.
    """
    _check_int("domains", domains, 1, MAX_DOMAINS)
    _check_int("records_per_domain", records_per_domain, 1)
    _check_int("canaries", canaries, 0)
    _check_int("canary_repeats", canary_repeats, 1, MAX_CANARY_REPEATS)
    records = [
        Record(f"{d}-{i:06d}", d, _record_text(d, i, seed))
        for d in DOMAINS[:domains]
        for i in range(records_per_domain)
    ]
    for cn in make_canaries(canaries, seed, domains):
        records.extend(Record(record_id, cn.source, cn.text) for record_id in cn.record_ids(canary_repeats))
    return records
