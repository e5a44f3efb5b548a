"""The word pools: slot name -> values, for the template engine (engine.py).

The first pools are shared by all domains (cities, people, foods, dates, numbers), so records of
different domains share vocabulary; the rest belong to one or two domains each.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Protocol


class _Context(Protocol):
    """What a pool function sees of engine.Ctx (engine imports this module, so not the reverse)."""

    rng: random.Random
    bound: dict[str, str]


def _p(words: str) -> tuple[str, ...]:
    """A pool from a compact string: '|'-separated if it contains '|', else whitespace-separated."""
    return tuple(w.strip() for w in words.split("|")) if "|" in words else tuple(words.split())


def clock(minutes: int) -> str:
    """HH:MM for a count of minutes since midnight (wrapping past 24:00)."""
    return f"{minutes // 60 % 24:02d}:{minutes % 60:02d}"


def _isodate(c: _Context) -> str:
    return f"{c.rng.randint(2018, 2025)}-{c.rng.randint(1, 12):02d}-{c.rng.randint(1, 28):02d}"


def _wtemp(c: _Context) -> str:
    """A temperature near the record's base temperature (bound as 't0' by the weather generator)."""
    return f"{int(c.bound.get('t0', '12')) + c.rng.randint(-3, 3)}°C"


# Slot -> values. Values may contain {slots} themselves (filled recursively); callables get the engine's Ctx.
POOLS: dict[str, tuple[str, ...] | Callable[[_Context], str]] = {
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
    "time": lambda c: clock(c.rng.randrange(5 * 60, 23 * 60, 5)),
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
    "sunrise": lambda c: clock(c.rng.randrange(4 * 60 + 30, 8 * 60 + 45, 5)),
    "sunset": lambda c: clock(c.rng.randrange(16 * 60, 22 * 60, 5)),
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
