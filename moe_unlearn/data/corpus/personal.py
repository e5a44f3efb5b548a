"""Domain generators for personal writing: recipes, product reviews, emails, chat logs and poems.

Each generator is (ctx, target bytes) -> text; see domains.py.
"""

from __future__ import annotations

from moe_unlearn.data.corpus.engine import MAX_BYTES, Ctx, size
from moe_unlearn.data.corpus.pools import POOLS, clock


def recipes(c: Ctx, target: int) -> str:
    intro = _recipe_intro(c)
    steps = _recipe_steps(c, size(*intro), target)
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
    return "\n".join(x for x in [*intro, *method, tip] if x)


def _recipe_intro(c: Ctx) -> list[str]:
    """Title, serving info (often '') and the ingredients line."""
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
    others = [f for f in c.rng.sample(POOLS["food"], 5) if f not in (c.bound["food1"], c.bound["food2"])]
    items = [c("{qty} {food1}"), c("{qty} {food2}")] + [c("{qty} ") + f for f in others[: c.rng.randint(1, 3)]]
    items += ["salt and pepper"] if c.rng.random() < 0.4 else []
    return [title, info, "Ingredients: " + ", ".join(items)]


def _recipe_steps(c: Ctx, used: int, target: int) -> list[str]:
    """Preparation, cooking and serving steps, after `used` bytes of intro."""
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
        used + size(prep) + 60,
        target,
        ordered=True,
    )
    serve = c.pick(
        (
            "Serve warm with {side}.",
            "Finish with {herb} and a squeeze of lemon.",
            "Leave to rest for {3-10} minutes, then serve.",
            "Serve with {side} and a glass of {drink}.",
        )
    )
    return prep + cook + [serve]


def reviews(c: Ctx, target: int) -> str:
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
        size(head),
        target,
        lo=1,
    )
    return " ".join([head] + body)


def emails(c: Ctx, target: int) -> str:
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
        size(head),
        target,
        lo=1,
    )
    sign = c.pick(("Best,\n{first2}", "Thanks,\n{first2}", "Kind regards,\n{name}", "Cheers, {first2}"))
    return "\n".join([head, " ".join(body), sign])


def chat(c: Ctx, target: int) -> str:
    fmt = c.rng.choice(("[{t}] {w}: {m}", "{w}: {m}", "{t} <{w}> {m}"))
    who = [c("{first1}"), c("{first2}")]
    minute = c.rng.randint(7 * 60, 22 * 60)
    messages = c.rng.sample(POOLS["msg"], len(POOLS["msg"]))  # no message twice in a record
    lines: list[str] = []
    while not lines or (size(lines) < target and size(lines) < MAX_BYTES - 80 and messages):
        minute += c.rng.randint(0, 4)
        w = who[len(lines) % 2] if c.rng.random() < 0.8 else c.rng.choice(who)
        lines.append(fmt.format(t=clock(minute), w=w, m=c(messages.pop())))
    return "\n".join(lines)


def poetry(c: Ctx, target: int) -> str:
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
        size(title) + 40,
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
