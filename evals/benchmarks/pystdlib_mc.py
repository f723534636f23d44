"""A multiple-choice benchmark written from Python's own standard library: which function does this
docstring sentence describe?

Teaches how to write a benchmark item from data you control. Each item is the first sentence of a public
function's or method's docstring; the choices are four names from the same module (the right one and
three distractors drawn with a seed), so the model must know what the module's functions do, not just
which names look like stdlib names. Items are read with :mod:`ast` (no import, no execution):

- candidates: public top-level functions and public methods of public top-level classes (no leading
  ``_``), named ``func`` or ``Class.method``; a redefinition keeps the first;
- the question: the docstring's first paragraph, whitespace collapsed, up to its first sentence end,
  kept when it has 6 to 40 words, is not a signature line (``copy(x) -> y``) and does not contain the
  function's own name (with ``_`` read as ``_`` or a space);
- distractors: other candidate names of the module, never one with the gold's bare name
  (``Context.sqrt`` beside ``Decimal.sqrt``), the same sentence, or a name that appears in the question;
  a sentence shared by two functions of a module is skipped as ambiguous.

Held-out files. The items must come from source files our models never trained on. Training presets
split pystdlib with ``val_fraction = 0.05`` (``gpt/training/config.py``), and those 38 val files give only
about 200 items, so the benchmark draws from the files of a larger hash-split, ``HELD_OUT_FRACTION = 0.2``
(``gpt.data.sources.split_by_hash``, the same hash, so the 0.05 val files are inside it). On Python
3.11.7 that is 672 candidates, 205 of them from the 0.05 val files, and 15 dropped as contaminated
(``python -m evals.benchmarks.domain``). Files hashed in [0.05, 0.2) *are* in the train split of the pystdlib
presets (``cpu-demo`` and the default ``TrainConfig``): :func:`seen_by_presets` names those items, and the
manifest counts the others. SmolLM2 pretrained on public code and has almost surely seen every stdlib file.

Record: ``{"id", "question", "choices", "gold", "module", "source"}``, scored with the template
``"Module: {module}\\nDocstring: {question}\\nFunction:"`` and continuations ``" " + choice``.

Reference: the item format of MMLU-style multiple choice (Hendrycks et al. 2021) as lm-evaluation-harness
scores it (``acc``, ``acc_norm``).
"""

import ast
import random
import re
from dataclasses import dataclass

from gpt.data.sources import split_by_hash, stdlib_files, unit_hash

VERSION = "1.0"
HELD_OUT_FRACTION = 0.2
PRESETS_VAL_FRACTION = 0.05  # TrainConfig.val_fraction, used by every pystdlib preset
N_CHOICES = 4
MIN_WORDS, MAX_WORDS = 6, 40
ABBREVIATIONS = ("e.g.", "i.e.", "etc.", "vs.", "cf.", "approx.", "resp.", "No.")
SIGNATURE = re.compile(r"^[\w.]+\(.*\)\s*(->|-->|$)")  # "copy(x) -> y": a C-style signature line


@dataclass(frozen=True)
class Function:
    """One public function or method of a held-out file, with its usable first sentence (or None)."""

    module: str
    qualname: str  # "func" or "Class.method": the choice text
    name: str  # the bare name
    sentence: str | None
    source: str  # the file's path relative to the stdlib folder


def module_name(rel: str) -> str:
    """``"asyncio/events.py"`` -> ``"asyncio.events"``, ``"collections/__init__.py"`` -> ``"collections"``."""
    parts = rel.removesuffix(".py").split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


def first_sentence(docstring: str | None) -> str | None:
    """The first sentence of a docstring's first paragraph, whitespace collapsed; None when there is no
    text or the paragraph is a signature line or a doctest."""
    if not docstring or not docstring.strip():
        return None
    paragraph = " ".join(docstring.strip().split("\n\n")[0].split())
    if SIGNATURE.match(paragraph) or ">>>" in paragraph:
        return None
    for match in re.finditer(r"[.!?](?=\s|$)", paragraph):
        end = match.end()
        if not any(paragraph[:end].endswith(" " + a) or paragraph[:end] == a for a in ABBREVIATIONS):
            return paragraph[:end]
    return paragraph


def mentions(sentence: str, name: str) -> bool:
    """Whether ``name`` (or ``name`` with ``_`` as spaces) occurs as whole words in ``sentence``, any case."""
    spellings = {name, name.replace("_", " ").strip()}
    return any(re.search(rf"(?<!\w){re.escape(s)}(?!\w)", sentence, re.IGNORECASE) for s in spellings if s)


def public_functions(source: str, rel: str) -> list[Function]:
    """The public top-level functions and public methods of public top-level classes of one file."""
    tree = ast.parse(source)
    module = module_name(rel)
    defs = (ast.FunctionDef, ast.AsyncFunctionDef)
    found: dict[str, Function] = {}

    def add(node, qualname):
        if qualname not in found:
            found[qualname] = Function(
                module, qualname, node.name, first_sentence(ast.get_docstring(node)), rel
            )

    for node in tree.body:
        if isinstance(node, defs) and not node.name.startswith("_"):
            add(node, node.name)
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            for sub in node.body:
                if isinstance(sub, defs) and not sub.name.startswith("_"):
                    add(sub, f"{node.name}.{sub.name}")
    return list(found.values())


def held_out_files(held_out_fraction: float = HELD_OUT_FRACTION, stdlib_dir=None) -> list[tuple[str, str]]:
    """(relative path, text) of the non-empty stdlib files in the held-out side of pystdlib's hash split."""
    if not 0 < held_out_fraction <= 1:
        raise ValueError(f"held_out_fraction={held_out_fraction}; it must be in (0, 1]")
    files = []
    for rel, path in stdlib_files(stdlib_dir):
        text = path.read_text(encoding="utf-8", errors="replace")
        if text.strip():  # as load_pystdlib, so the split is the one training uses
            files.append((rel, text))
    rels = [rel for rel, _ in files]
    _, held_out = split_by_hash(files, rels, held_out_fraction)
    return held_out


def seen_by_presets(record: dict, val_fraction: float = PRESETS_VAL_FRACTION) -> bool:
    """Whether the item's source file is in the train split of models trained on pystdlib at
    ``val_fraction`` (every preset in ``gpt/training/config.py`` uses 0.05)."""
    return unit_hash(record["source"]) >= val_fraction


def _items_of_module(functions: list[Function]) -> list[tuple[Function, list[Function]]]:
    """(gold, eligible distractors) for each function of one module that makes an unambiguous item."""
    sentences = [f.sentence for f in functions if f.sentence]
    items = []
    for gold in functions:
        s = gold.sentence
        if s is None or not MIN_WORDS <= len(s.split()) <= MAX_WORDS or mentions(s, gold.name):
            continue
        if sentences.count(s) > 1:
            continue
        pool = [
            f
            for f in functions
            if f.name != gold.name
            and f.sentence != s
            and not mentions(s, f.name)
            and f.qualname != gold.qualname
        ]
        if len({f.qualname for f in pool}) >= N_CHOICES - 1:
            items.append((gold, pool))
    return items


def build_pystdlib_mc(
    n: int | None = 500, seed: int = 0, held_out_fraction: float = HELD_OUT_FRACTION, stdlib_dir=None
) -> list[dict]:
    """``n`` items (None: every candidate) in a seeded order; ``build(n)`` is the first n of ``build(None)``.

    The same seed, Python version and stdlib give the same items, choices and gold positions."""
    candidates = []
    for rel, text in held_out_files(held_out_fraction, stdlib_dir):
        try:
            functions = public_functions(text, rel)
        except SyntaxError:  # lib2to3's test data and the like: not Python 3 sources
            continue
        candidates.extend(_items_of_module(functions))
    if n is not None and not 0 <= n <= len(candidates):
        raise ValueError(
            f"n={n} but the held-out files (held_out_fraction={held_out_fraction}) give "
            f"{len(candidates)} items; ask for fewer or raise held_out_fraction"
        )
    rng = random.Random(seed)
    order = list(range(len(candidates)))
    rng.shuffle(order)
    records = []
    for i in order[:n]:
        gold, pool = candidates[i]
        distractors = rng.sample(pool, N_CHOICES - 1)
        choices = [gold.qualname] + [f.qualname for f in distractors]
        rng.shuffle(choices)
        records.append(
            {
                "id": f"pystdlib-{gold.module}.{gold.qualname}",
                "question": gold.sentence,
                "choices": choices,
                "gold": choices.index(gold.qualname),
                "module": gold.module,
                "source": gold.source,
            }
        )
    return records
