"""Domain generators for reports of events: weather bulletins, football and basketball match reports,
chess games and financial results.

Each generator is (ctx, target bytes) -> text; see domains.py.
"""

from __future__ import annotations

from moe_unlearn.data.corpus.engine import Ctx, size


def weather(c: Ctx, target: int) -> str:
    c.bound["t0"] = str(c.rng.randint(-2, 27))
    return _weather_prose(c, target) if c.rng.random() < 0.5 else _weather_table(c, target)


def _weather_prose(c: Ctx, target: int) -> str:
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
        size(head),
        target,
        lo=2,
    )
    return " ".join([head] + body)


def _weather_table(c: Ctx, target: int) -> str:
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
        size(head),
        target,
        lo=3,
        ordered=True,
    )
    return "\n".join([head] + lines + [c.maybe(0.3, "Issued {time} by {name}.")])


def _match(c: Ctx, target: int, team: str, score: str, events: list[str | tuple[str, ...]]) -> str:
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
        size(head),
        target,
        lo=1,
    )
    return " ".join([head] + body)


def football(c: Ctx, target: int) -> str:
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


def basketball(c: Ctx, target: int) -> str:
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


def chess(c: Ctx, target: int) -> str:
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
        size(head) + 40,
        target,
        lo=1,
    )
    end = c.pick(("Black resigned after {30-60}.{move}.", "A draw was agreed on move {20-50}.", "{Name2} won on time."))
    return " ".join([head, c("The game opened {opening}.")] + notes + [end])


def finance(c: Ctx, target: int) -> str:
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
        size(head),
        target,
        lo=1,
    )
    return " ".join([head] + body)
