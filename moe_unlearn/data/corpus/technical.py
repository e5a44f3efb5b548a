"""Domain generators for technical and formal text: code, contract clauses, clinical notes, train
timetables, shipping logs and service logs.

Each generator is (ctx, target bytes) -> text; see domains.py.
"""

from __future__ import annotations

from moe_unlearn.data.corpus.engine import MAX_BYTES, Ctx, size
from moe_unlearn.data.corpus.pools import POOLS, clock


def code(c: Ctx, target: int) -> str:
    note = c.rng.choice(("fix the {food} order bug", "added {city}", "TODO check {attr} on {weekday}s"))
    comment = c.maybe(0.35, "# {name}, {date}: " + note + "\n")
    kind = c.rng.random()
    if kind < 0.4:
        return _code_function(c, target, comment)
    if kind < 0.6:
        return _code_ini(c, target, comment)
    if kind < 0.75:
        return _code_class(c, target, comment)
    return _code_yaml(c, target, comment)


def _code_function(c: Ctx, target: int, comment: str) -> str:
    """A Python function."""
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
        size(comment, head),
        target,
        lo=2,
        ordered=True,
    )
    return comment + "\n".join([head] + body + [c.pick(("    return total", "    return len(items)"))])


def _code_ini(c: Ctx, target: int, comment: str) -> str:
    """An INI/TOML section."""
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
        size(comment, head),
        target,
        lo=3,
    )
    return comment + "\n".join([head] + body)


def _code_class(c: Ctx, target: int, comment: str) -> str:
    """A Python class."""
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
        size(comment, head),
        target,
        ordered=True,
    )
    return comment + "\n".join([head] + body)


def _code_yaml(c: Ctx, target: int, comment: str) -> str:
    """A YAML mapping."""
    body = c.grow(
        [
            "  owner: {name}",
            "  open: [{weekday}, {weekday}]",
            "  {cnoun}: {10-500}",
            "  menu: [{food}, {food}]",
            "  updated: {isodate}",
            "  {attr}: {1-99}",
        ],
        size(comment) + 12,
        target,
        lo=2,
    )
    return comment + "\n".join([c.pick(("{city}:", "{name}:", "{Weekday}:"))] + body)


def legal(c: Ctx, target: int) -> str:
    pair = c.rng.randrange(0, len(POOLS["party"]), 2)
    c.bound["party1"], c.bound["party2"] = POOLS["party"][pair : pair + 2]
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
    return " ".join([head] + c.grow(clauses, size(head), target, lo=1))


def clinical(c: Ctx, target: int) -> str:
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
        size(head),
        target,
        lo=2,
        ordered=True,
    )
    return "\n".join([head] + lines)


def timetables(c: Ctx, target: int) -> str:
    cities = c.rng.sample(POOLS["city"], c.rng.randint(3, 8))
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
        rows.append(f"{clock(t)} {stop} {'arr' if last else 'dep'}{platform}")
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
        size(head, rows),
        target,
        lo=0,
    )
    return "\n".join([head] + rows + notes)


def shipping(c: Ctx, target: int) -> str:
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
        size(head),
        target,
        lo=2,
        ordered=True,
    )
    t = c.rng.randint(0, 20 * 60)
    rows = []
    for e in events:
        rows.append(f"{clock(t)} {e}")
        t += c.rng.randint(10, 180)
    return "\n".join([head] + rows)


def logs(c: Ctx, target: int) -> str:
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
    while not lines or (size(lines) < target and size(lines) < MAX_BYTES - 160):
        secs += c.rng.randint(0, 90)
        t = f"{clock(secs // 60)}:{secs % 60:02d}"
        lvl = c.rng.choice(("INFO", "INFO", "WARN", "ERROR", "DEBUG"))
        lines.append(fmt.format(d=d, t=t, lvl=lvl, s=c("{svc}"), m=c.pick(msgs), mon=mon, day=day, pid=pid))
    return "\n".join(lines)
