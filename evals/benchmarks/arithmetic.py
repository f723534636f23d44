"""Arithmetic word problems with exact answers: templated, seeded, and checked by a parser, not a judge.

Teaches the cheapest kind of benchmark to trust: every item is generated from a few random integers by
a template (shopping totals, rates, fair shares, differences, a temperature that may go below zero,
multi-step stories), so its answer is computed, not annotated, and can be recomputed from the
``params`` stored in the record. Numbers above 999 are written with thousands commas in about half
the items (``params["commas"]``), as people write them. The checker reads the model's *final* number
the way lm-eval's GSM8K "flexible-extract" filter does (the last run of digits, ``$``, ``,`` and ``.``)
and compares it with the answer as an integer, so ``"$1,250."`` and ``"1250"`` both match ``1250``.

Record: ``{"id", "question", "answer", "template", "params"}``; ``answer`` is the canonical integer
string (``"-3"``, ``"1250"``: no commas, no sign for positives).

Reference: GSM8K (Cobbe et al. 2021) for the item style; lm-evaluation-harness ``gsm8k.yaml`` for the
extraction regex (:data:`evals.benchmarks.gsm8k.FLEXIBLE_PATTERN`).
"""

import random
import re
from decimal import Decimal

from evals.benchmarks.gsm8k import FLEXIBLE_PATTERN

VERSION = "1.0"
NAMES = ("Ava", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hiro", "Imani", "Jonas", "Kira", "Luis")
GOODS = (("notebooks", "pens"), ("apples", "pears"), ("tickets", "posters"), ("shirts", "hats"))
MACHINES = (
    ("printer", "pages"),
    ("bakery oven", "loaves"),
    ("bottling line", "bottles"),
    ("loom", "scarves"),
)
THINGS = ("marbles", "stickers", "cards", "beads", "stamps", "coins")
PLACES = ("the museum", "the zoo", "the library", "the aquarium", "the park")
TEMPLATES = ("shopping", "rate", "sharing", "difference", "temperature", "multi_step", "savings")


def fmt(x: int, commas: bool) -> str:
    """``1250`` as ``"1,250"`` when ``commas``, else ``"1250"``."""
    return f"{x:,}" if commas else str(x)


def _make(template: str, rng: random.Random, commas: bool) -> tuple[str, dict, int]:
    """(question, params, answer) for one template."""
    name = rng.choice(NAMES)
    if template == "shopping":
        (item1, item2), a, p, b, q = (
            rng.choice(GOODS),
            rng.randint(2, 12),
            rng.randint(2, 60),
            rng.randint(2, 12),
            rng.randint(2, 60),
        )
        question = (
            f"{name} buys {a} {item1} at ${p} each and {b} {item2} at ${q} each. "
            f"How many dollars does {name} spend in total?"
        )
        return question, dict(a=a, p=p, b=b, q=q), a * p + b * q
    if template == "rate":
        (machine, unit), r, h = rng.choice(MACHINES), rng.randint(40, 2500), rng.randint(2, 24)
        question = (
            f"A {machine} makes {fmt(r, commas)} {unit} per hour. How many {unit} does it make in {h} hours?"
        )
        return question, dict(r=r, h=h), r * h
    if template == "sharing":
        thing, each, k = rng.choice(THINGS), rng.randint(3, 400), rng.randint(2, 12)
        total = each * k
        question = (
            f"{name} has {fmt(total, commas)} {thing} and shares them equally among {k} friends. "
            f"How many {thing} does each friend get?"
        )
        return question, dict(total=total, k=k), each
    if template == "difference":
        place, a = rng.choice(PLACES), rng.randint(1000, 60000)
        b = a + rng.randint(1, 20000)
        question = (
            f"Last year {place} had {fmt(a, commas)} visitors. This year it had {fmt(b, commas)} visitors. "
            f"How many more visitors did it have this year?"
        )
        return question, dict(a=a, b=b), b - a
    if template == "temperature":
        t, d = rng.randint(-5, 25), rng.randint(3, 30)
        question = (
            f"At noon the temperature was {t} degrees. By midnight it had dropped by {d} degrees. "
            f"What was the temperature at midnight, in degrees?"
        )
        return question, dict(t=t, d=d), t - d
    if template == "multi_step":
        thing, a, b, c = rng.choice(THINGS), rng.randint(5, 200), rng.randint(2, 9), rng.randint(6, 150)
        d = rng.randint(1, a + b * c)
        question = (
            f"{name} has {a} {thing}. {name} buys {b} packs of {c} {thing} "
            f"and then gives away {fmt(d, commas)}. How many {thing} does {name} have now?"
        )
        return question, dict(a=a, b=b, c=c, d=d), a + b * c - d
    if template == "savings":
        s, w = rng.randint(15, 400), rng.randint(4, 30)
        x = rng.randint(1, s * w)
        question = (
            f"{name} saves ${s} every week for {w} weeks, then spends ${fmt(x, commas)} on a bicycle. "
            f"How many dollars does {name} have left?"
        )
        return question, dict(s=s, w=w, x=x), s * w - x
    raise ValueError(f"unknown template {template!r}; choose from {TEMPLATES}")


def build_arithmetic(n: int = 500, seed: int = 0) -> list[dict]:
    """``n`` distinct problems, templates in turn, all drawn from one ``random.Random(seed)``;
    ``build(n)`` is the first n items of ``build(n + m)``."""
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n={n!r}; ask for a whole number of items >= 0")
    rng = random.Random(seed)
    records, seen = [], set()
    while len(records) < n:
        template = TEMPLATES[len(records) % len(TEMPLATES)]
        commas = rng.random() < 0.5
        question, params, answer = _make(template, rng, commas)
        if question in seen:  # redraw a repeat
            continue
        seen.add(question)
        records.append(
            {
                "id": f"arithmetic-{len(records):04d}",
                "question": question,
                "answer": str(answer),
                "template": template,
                "params": {**params, "commas": commas},
            }
        )
    return records


def final_number(text: str | None) -> Decimal | None:
    """The last number in ``text``: the last match of the GSM8K flexible-extract pattern that holds a
    digit, without ``$``, ``,`` and trailing dots; None when there is none.

    Unlike lm-eval, a digit-free match (an ellipsis ``...``) is skipped rather than taken as the answer."""
    if text is None:
        return None
    if not isinstance(text, str):
        raise TypeError(f"text must be a str or None, got {type(text).__name__}")
    runs = [a or b for a, b in re.findall(FLEXIBLE_PATTERN, text)]
    runs = [r for r in runs if any(c.isdigit() for c in r)]
    if not runs:
        return None
    number = runs[-1].replace("$", "").replace(",", "").rstrip(".")
    return Decimal(number) if re.fullmatch(r"-?\d+(\.\d+)?", number) else None


def check_arithmetic(generation: str | None, answer: str) -> bool:
    """Whether the generation's final number equals ``answer`` as an integer (``"$1,250."``, ``"1250.0"``
    match ``"1250"``; ``"1249"``, ``"12.5"``, ``"-1250"`` do not)."""
    if not isinstance(answer, str) or not re.fullmatch(r"-?\d+", answer):
        raise ValueError(
            f"answer={answer!r}; pass the record's canonical integer string, like '1250' or '-3'"
        )
    got = final_number(generation)
    return got is not None and got == int(answer)
