"""The custom domain benchmarks: pystdlib multiple choice (a hand-made module worked through, then every
real item checked against its source file re-read here), arithmetic (every answer recomputed from its
stored parameters, the checker on formatting variants and near misses), byte-identical rebuilds, the
manifest's hash, and the command line end to end."""

import ast
import hashlib
import json
import re
import textwrap

import pytest

from evals.benchmarks.arithmetic import TEMPLATES, build_arithmetic, check_arithmetic, final_number
from evals.benchmarks.domain import DomainConfig, load_benchmark, main, manifest_path, write_benchmark
from evals.benchmarks.pystdlib_mc import (
    HELD_OUT_FRACTION,
    build_pystdlib_mc,
    first_sentence,
    mentions,
    module_name,
    seen_by_presets,
)
from gpt.data.sources import load_pystdlib, stdlib_files, unit_hash

KEYS = ["id", "question", "choices", "gold", "module", "source"]
SHAPES = '''
def area(width, height):
    """Multiply the two sides of a rectangle to get its surface.

    More detail that is not part of the question.
    """

def perimeter(w, h):
    """Add up the lengths of all four sides of the rectangle."""

def volume(w, h, d):
    """Compute the volume of a box from its three sides."""

def tiny():
    """Too short."""

def _hidden():
    """A private helper that is never offered as a choice at all."""

class Circle:
    def scale(self, k):
        """Grow or shrink the circle by a constant factor k."""

    def area(self):
        """Return the surface of the circle, pi times r squared."""

    def _secret(self):
        """Private methods are left out of the choices as well."""
'''


def test_sentences_names_and_mentions():
    assert (
        first_sentence("Return x, e.g. the first one.  More text.\n\nOther paragraph.")
        == "Return x, e.g. the first one."
    )
    assert first_sentence("Join the\n   lines of a paragraph? Then stop.") == "Join the lines of a paragraph?"
    assert first_sentence("No final stop here") == "No final stop here"
    assert first_sentence("copy(x) -> y\n\nReturn a copy.") is None  # a C-style signature line
    assert (
        first_sentence(">>> f(1)\n2") is None and first_sentence("") is None and first_sentence(None) is None
    )
    assert (
        module_name("asyncio/events.py") == "asyncio.events"
        and module_name("collections/__init__.py") == "collections"
    )
    assert module_name("_pydecimal.py") == "_pydecimal"
    assert mentions("Return the Area of it.", "area") and mentions("Get the next item.", "get_next") is False
    assert mentions("Get next item.", "get_next") and not mentions("Return the areas.", "area")


def test_hand_made_module(tmp_path):
    (tmp_path / "shapes.py").write_text(textwrap.dedent(SHAPES))
    (tmp_path / "test").mkdir()  # pystdlib leaves test folders out, and so do we
    (tmp_path / "test" / "test_shapes.py").write_text(textwrap.dedent(SHAPES))
    records = build_pystdlib_mc(None, seed=0, held_out_fraction=1.0, stdlib_dir=tmp_path)
    questions = {r["id"]: r["question"] for r in records}
    # volume names itself, tiny is 2 words, the private ones are not candidates
    assert questions == {
        "pystdlib-shapes.area": "Multiply the two sides of a rectangle to get its surface.",
        "pystdlib-shapes.perimeter": "Add up the lengths of all four sides of the rectangle.",
        "pystdlib-shapes.Circle.scale": "Grow or shrink the circle by a constant factor k.",
        "pystdlib-shapes.Circle.area": "Return the surface of the circle, pi times r squared.",
    }
    public = {"area", "perimeter", "volume", "tiny", "Circle.scale", "Circle.area"}
    for r in records:
        assert list(r) == KEYS and r["module"] == "shapes" and r["source"] == "shapes.py"
        gold = r["choices"][r["gold"]]
        assert r["id"] == f"pystdlib-shapes.{gold}"
        assert len(set(r["choices"])) == 4 and set(r["choices"]) <= public
        bare = [c.split(".")[-1] for c in r["choices"]]
        assert bare.count(gold.split(".")[-1]) == 1  # area and Circle.area are never choices together
    assert build_pystdlib_mc(2, seed=0, held_out_fraction=1.0, stdlib_dir=tmp_path) == records[:2]
    with pytest.raises(ValueError, match="give 4 items"):
        build_pystdlib_mc(5, seed=0, held_out_fraction=1.0, stdlib_dir=tmp_path)
    with pytest.raises(ValueError, match="held_out_fraction"):
        build_pystdlib_mc(1, held_out_fraction=0.0, stdlib_dir=tmp_path)


@pytest.fixture(scope="module")
def pystdlib_items():
    return build_pystdlib_mc(None, seed=0)


def defined_functions(source: str) -> dict[str, str]:
    """qualname -> docstring (or "") of the top-level functions and the methods of top-level classes."""
    out = {}
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out.setdefault(node.name, ast.get_docstring(node) or "")
        if isinstance(node, ast.ClassDef):
            for sub in node.body:
                if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    out.setdefault(f"{node.name}.{sub.name}", ast.get_docstring(sub) or "")
    return out


def test_every_real_item_matches_its_source_file(pystdlib_items):
    records = pystdlib_items
    assert len(records) >= 500  # the default n of evals.benchmarks.domain fits, before contamination
    assert len({r["id"] for r in records}) == len(records)
    paths = dict(stdlib_files())
    held_out_texts = set(load_pystdlib(HELD_OUT_FRACTION).val)
    parsed = {}
    for r in records:
        assert list(r) == KEYS
        assert unit_hash(r["source"]) < HELD_OUT_FRACTION
        if r["source"] not in parsed:
            text = paths[r["source"]].read_text(encoding="utf-8", errors="replace")
            assert text in held_out_texts  # the file is on the held-out side of the split training uses
            parsed[r["source"]] = defined_functions(text)
        functions = parsed[r["source"]]
        gold = r["choices"][r["gold"]]
        assert " ".join(functions[gold].split()).startswith(r["question"])  # the docstring's first sentence
        assert 6 <= len(r["question"].split()) <= 40
        assert not re.search(rf"\b{re.escape(gold.split('.')[-1])}\b", r["question"], re.IGNORECASE)
        assert len(set(r["choices"])) == 4 and all(c in functions for c in r["choices"])
        assert all(not part.startswith("_") for c in r["choices"] for part in c.split("."))
        assert [c.split(".")[-1] for c in r["choices"]].count(gold.split(".")[-1]) == 1
    golds = [r["gold"] for r in records]
    assert all(0.15 < golds.count(g) / len(golds) < 0.35 for g in range(4))  # the gold is shuffled: ~1/4 each
    assert 0 < sum(not seen_by_presets(r) for r in records) < len(records)


def test_pystdlib_build_is_deterministic(pystdlib_items, tmp_path):
    again = build_pystdlib_mc(100, seed=0)
    assert again == pystdlib_items[:100]
    a = write_benchmark(pystdlib_items[:100], tmp_path / "a.jsonl", "pystdlib_mc", "1.0", 0)
    b = write_benchmark(again, tmp_path / "b.jsonl", "pystdlib_mc", "1.0", 0)
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes() and a["sha256"] == b[
        "sha256"
    ]
    other = write_benchmark(build_pystdlib_mc(100, seed=1), tmp_path / "c.jsonl", "pystdlib_mc", "1.0", 1)
    assert other["sha256"] != a["sha256"]


def recompute(template: str, p: dict) -> int:
    """Each template's answer, written out again from the word problem's wording."""
    if template == "shopping":
        return p["a"] * p["p"] + p["b"] * p["q"]
    if template == "rate":
        return p["r"] * p["h"]
    if template == "sharing":
        assert p["total"] % p["k"] == 0  # shared equally, nothing left over
        return p["total"] // p["k"]
    if template == "difference":
        return p["b"] - p["a"]
    if template == "temperature":
        return p["t"] - p["d"]
    if template == "multi_step":
        return p["a"] + p["b"] * p["c"] - p["d"]
    if template == "savings":
        return p["s"] * p["w"] - p["x"]
    raise AssertionError(template)


def test_every_arithmetic_answer_recomputes():
    records = build_arithmetic(700, seed=0)
    assert [r["template"] for r in records[:7]] == list(TEMPLATES)
    assert {t: sum(r["template"] == t for r in records) for t in TEMPLATES} == dict.fromkeys(TEMPLATES, 100)
    for r in records:
        assert list(r) == ["id", "question", "answer", "template", "params"]
        value = recompute(r["template"], r["params"])
        assert r["answer"] == str(value) and re.fullmatch(r"-?(0|[1-9]\d*)", r["answer"])
        commas = r["params"]["commas"]
        for key, x in r["params"].items():
            if key != "commas" and x >= 1000:
                assert (f"{x:,}" if commas else str(x)) in r["question"]
        assert check_arithmetic(f"So the answer is {value}.", r["answer"])
        assert not check_arithmetic(f"So the answer is {value + 1}.", r["answer"])
    assert len({r["question"] for r in records}) == len(records) and len({r["id"] for r in records}) == 700
    assert any(int(r["answer"]) < 0 for r in records)  # the temperature template goes below zero
    assert any(re.search(r"\d,\d{3}", r["question"]) for r in records)
    assert any(re.search(r"\d{4}", r["question"]) for r in records)


def test_arithmetic_build_is_deterministic(tmp_path):
    first = build_arithmetic(200, seed=0)
    assert build_arithmetic(200, seed=0) == first and build_arithmetic(50, seed=0) == first[:50]
    a = write_benchmark(first, tmp_path / "a.jsonl", "arithmetic", "1.0", 0)
    b = write_benchmark(build_arithmetic(200, seed=0), tmp_path / "b.jsonl", "arithmetic", "1.0", 0)
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert (
        a["sha256"]
        == b["sha256"]
        != write_benchmark(build_arithmetic(200, seed=1), tmp_path / "c.jsonl", "x", "1", 1)["sha256"]
    )
    with pytest.raises(ValueError, match="n=-1"):
        build_arithmetic(-1)


@pytest.mark.parametrize(
    "generation",
    [
        "1250",
        "The answer is 1250.",
        "$1,250",
        "#### 1,250",
        "She has $1,250.00 left.",
        "1250.0",
        "so 1,250...",
        "2 + 3 = 5, then 1250",
        "It is 1250. I think so...",
        "**1250**",
        "x=1250\n",
    ],
)
def test_checker_accepts_formatting_variants(generation):
    assert check_arithmetic(generation, "1250")


@pytest.mark.parametrize(
    "generation",
    [
        "1249",
        "1251",
        "125",
        "12500",
        "12.50",
        "1,250.5",
        "-1250",
        "1250 or 1251",
        "one thousand two hundred fifty",
        "",
        None,
        "1.250.0",
    ],
)
def test_checker_rejects_near_misses(generation):
    assert not check_arithmetic(generation, "1250")


def test_checker_hand_worked():
    assert check_arithmetic("It drops to -11 degrees.", "-11") and not check_arithmetic(
        "It drops to 11 degrees.", "-11"
    )
    assert check_arithmetic("5 - 3 = 2", "2") and check_arithmetic("0", "0")
    assert final_number("It costs $1,000.") == 1000 and final_number("no digits ...") is None
    with pytest.raises(ValueError, match="canonical integer"):
        check_arithmetic("1000", "1,000")
    with pytest.raises(TypeError, match="str or None"):
        check_arithmetic(1000, "1000")


def test_write_and_load_benchmark(tmp_path):
    records = build_arithmetic(20, seed=3)
    path = tmp_path / "sub" / "arith.jsonl"
    manifest = write_benchmark(records, path, "arithmetic", "1.0", 3, note="x")
    data = path.read_bytes()
    assert manifest == {
        "name": "arithmetic",
        "version": "1.0",
        "seed": 3,
        "n": 20,
        "sha256": hashlib.sha256(data).hexdigest(),
        "file": "arith.jsonl",
        "bytes": len(data),
        "note": "x",
    }
    assert json.loads(manifest_path(path).read_text()) == manifest
    assert sorted(p.name for p in path.parent.iterdir()) == [
        "arith.jsonl",
        "arith.manifest.json",
    ]  # no temp files
    assert load_benchmark(path) == (records, manifest)
    path.write_bytes(data.replace(b'"answer": "', b'"answer": "1', 1))
    with pytest.raises(ValueError, match="does not match"):
        load_benchmark(path)
    with pytest.raises(ValueError, match="unique"):
        write_benchmark(records + records[:1], tmp_path / "d.jsonl", "arithmetic", "1.0", 3)
    with pytest.raises(ValueError, match="non-empty"):
        write_benchmark([], tmp_path / "e.jsonl", "arithmetic", "1.0", 3)


def test_command_line_builds_clean_benchmarks(tmp_path, data_file, capsys):
    data_file("gsm8k", "train.jsonl")
    result = main(DomainConfig(out=str(tmp_path), n_pystdlib=60, n_arithmetic=40))
    report = json.loads((tmp_path / "contamination.json").read_text())
    for name, n in [("pystdlib_mc", 60), ("arithmetic", 40)]:
        records, manifest = load_benchmark(tmp_path / f"{name}.jsonl")
        assert manifest == result[name] and len(records) == n
        flagged = {row["id"] for row in report[name] if row["contaminated"]}
        assert not flagged & {r["id"] for r in records}  # nothing contaminated was written
        check = manifest["contamination"]
        assert check["dropped"] == len(flagged) == sum(check["dropped_by_corpus"].values())
        assert check["candidates"] == len(report[name]) and check["ngram"] == 13 and check["threshold"] == 0.0
    assert (
        result["pystdlib_mc"]["contamination"]["dropped"] > 0
    )  # stdlib repeats some docstrings across files
    assert report["gsm8k_test_vs_train"]["n"] == 1319
    assert '"sha256"' in capsys.readouterr().out
    with pytest.raises(ValueError, match="threshold"):
        DomainConfig(threshold=1.5)
