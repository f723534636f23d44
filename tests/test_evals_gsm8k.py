"""GSM8K extraction and exact match against lm-evaluation-harness itself: its ``gsm8k.yaml`` read from the
installed package, its filter classes built as ``ConfigurableTask`` builds them and its ``exact_match``
metric, on the 1,319 test solutions, adversarial generations made from them and random strings; plus
hand-worked examples."""

import random
from pathlib import Path

import pytest

from evals.benchmarks.gsm8k import (
    COT_STRICT_PATTERN,
    DOC_TO_TEXT,
    FALLBACK,
    FLEXIBLE_GROUP_SELECT,
    FLEXIBLE_PATTERN,
    IGNORE_CASE,
    IGNORE_PUNCTUATION,
    NUM_FEWSHOT,
    REGEXES_TO_IGNORE,
    STRICT_PATTERN,
    UNTIL,
    exact_match,
    flexible_extract,
    normalize,
    regex_extract,
    score,
    strict_match,
)
from gpt.data.gsm8k import load_gsm8k

lm_eval = pytest.importorskip("lm_eval")
yaml = pytest.importorskip("yaml")

TASKS = Path(lm_eval.__file__).parent / "tasks" / "gsm8k"
FILTERS = ("strict-match", "flexible-extract")
NATALIA = (
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72"
)


@pytest.fixture(scope="module")
def task_config():
    return yaml.safe_load((TASKS / "gsm8k.yaml").read_text())


@pytest.fixture(scope="module")
def test_docs(data_file):
    data_file("gsm8k", "test.jsonl")
    return [{"question": p.question, "answer": p.answer} for p in load_gsm8k("test")]


def lm_eval_scores(config, docs, generations):
    """lm-eval's per-item filtered responses and scores, applied as ``ConfigurableTask`` applies them:
    one ``FilterEnsemble`` per ``filter_list`` entry over all instances, then the metric per item."""
    from lm_eval.api.instance import Instance
    from lm_eval.api.registry import get_metric
    from lm_eval.filters import build_filter_ensemble
    from lm_eval.utils import apply_template

    instances = [
        Instance("generate_until", doc, ("", {}), 0, resps=[gen])
        for doc, gen in zip(docs, generations, strict=True)
    ]
    for entry in config["filter_list"]:
        components = [
            [f["function"], {k: v for k, v in f.items() if k != "function"}] for f in entry["filter"]
        ]
        build_filter_ensemble(entry["name"], components).apply(instances)
    (metric,) = config["metric_list"]
    kwargs = {k: v for k, v in metric.items() if k not in ("metric", "aggregation", "higher_is_better")}
    metric_fn = get_metric(metric["metric"])
    rows = []
    for inst in instances:
        gold = apply_template(config["doc_to_target"], inst.doc)
        row = {}
        for name in FILTERS:
            pred = inst.filtered_resps[name]
            row[name] = pred
            row[f"exact_match,{name}"] = float(
                metric_fn(references=[gold], predictions=[pred], **kwargs)["exact_match"]
            )
        rows.append(row)
    return rows


def our_scores(docs, generations):
    rows = []
    for doc, gen in zip(docs, generations, strict=True):
        rows.append(
            {
                "strict-match": strict_match(gen),
                "flexible-extract": flexible_extract(gen),
                **score(gen, doc["answer"]),
            }
        )
    return rows


def perturbations(answer: str) -> list[str]:
    """Generations a model could write for a problem with this solution: right, wrong, oddly formatted."""
    reasoning, final = answer.rsplit("#### ", 1)
    n = int(final.replace(",", ""))
    return [
        answer,
        f"{reasoning}The answer is {n}.",
        f"{reasoning}#### {n}.0",
        f"{reasoning}#### {n:,}.",
        f"So she pays ${n:,}.",
        f"${n:,}.00",
        f"-{n}",
        f"#### -{n}",
        f"the answer is {n} or {n + 1}",
        f"the answer is {n + 1} or {n}",
        f"#### {n + 1}\n#### {n}",
        f"#### {n}\n\nQuestion: what is {n + 1}?",
        f"The answer is {n}...",
        f"The answer is {n}. I think so...",
        f"{n} apples",
        "I do not know.",
        "",
        f"#### {n}\u0130",
        f"#### {n}\x00",
        f"#### {str(n)[::-1]}",
        reasoning.strip(),
    ]


def mismatches(ours, theirs):
    return [(i, a, b) for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b]


def test_constants_are_the_yaml(task_config):
    assert task_config["doc_to_text"] == DOC_TO_TEXT.replace("{question}", "{{question}}")
    assert task_config["num_fewshot"] == NUM_FEWSHOT
    assert tuple(task_config["generation_kwargs"]["until"]) == UNTIL
    strict, flexible = task_config["filter_list"]
    assert strict["name"] == "strict-match" and strict["filter"][0]["regex_pattern"] == STRICT_PATTERN
    assert "group_select" not in strict["filter"][0] and strict["filter"][1]["function"] == "take_first"
    assert (
        flexible["name"] == "flexible-extract" and flexible["filter"][0]["regex_pattern"] == FLEXIBLE_PATTERN
    )
    assert flexible["filter"][0]["group_select"] == FLEXIBLE_GROUP_SELECT
    (metric,) = task_config["metric_list"]
    assert metric["metric"] == "exact_match" and tuple(metric["regexes_to_ignore"]) == REGEXES_TO_IGNORE
    assert (metric["ignore_case"], metric["ignore_punctuation"]) == (IGNORE_CASE, IGNORE_PUNCTUATION)
    cot = yaml.safe_load((TASKS / "gsm8k-cot.yaml").read_text())
    assert cot["filter_list"][0]["filter"][0]["regex_pattern"] == COT_STRICT_PATTERN
    from lm_eval.filters.extraction import RegexFilter

    assert RegexFilter().fallback == FALLBACK


def test_the_test_solutions_score_as_lm_eval_scores_them(task_config, test_docs):
    generations = [doc["answer"] for doc in test_docs]
    ours, theirs = our_scores(test_docs, generations), lm_eval_scores(task_config, test_docs, generations)
    assert len(ours) == 1319 and mismatches(ours, theirs) == []
    assert all(row["exact_match,strict-match"] == 1.0 for row in ours)  # a gold solution matches itself


def test_adversarial_generations_score_as_lm_eval_scores_them(task_config, test_docs):
    docs, generations = [], []
    for doc in test_docs:
        for gen in perturbations(doc["answer"]):
            docs.append(doc)
            generations.append(gen)
    ours, theirs = our_scores(docs, generations), lm_eval_scores(task_config, docs, generations)
    assert len(ours) == 1319 * 21 and mismatches(ours, theirs) == []
    for key in ("exact_match,strict-match", "exact_match,flexible-extract"):  # both outcomes are exercised
        assert {row[key] for row in ours} == {0.0, 1.0}


def test_random_strings_score_as_lm_eval_scores_them(task_config):
    rng = random.Random(0)
    alphabet = "0123456789$.,-# \n\tThe answer isIΣΑς\u0130\x00"
    docs, generations = [], []
    for _ in range(3000):
        docs.append(
            {"question": "q", "answer": "".join(rng.choices(alphabet, k=rng.randint(0, 12))) + "#### 12"}
        )
        generations.append("".join(rng.choices(alphabet, k=rng.randint(0, 30))))
    for i in range(0, 3000, 3):  # some with the gold number, so that matches occur too
        generations[i] += rng.choice(["#### 12", " 12.", "$12", "1,2", "#### 1,2."])
    ours, theirs = our_scores(docs, generations), lm_eval_scores(task_config, docs, generations)
    assert mismatches(ours, theirs) == []
    assert {row["exact_match,flexible-extract"] for row in ours} == {0.0, 1.0}


@pytest.mark.parametrize(
    "settings",
    [
        dict(regexes_to_ignore=None, ignore_case=False, ignore_punctuation=False, ignore_numbers=False),
        dict(regexes_to_ignore=[], ignore_case=False, ignore_punctuation=False, ignore_numbers=False),
        dict(regexes_to_ignore=[], ignore_case=True, ignore_punctuation=False, ignore_numbers=False),
        dict(regexes_to_ignore=[r"\s+"], ignore_case=True, ignore_punctuation=True, ignore_numbers=False),
        dict(regexes_to_ignore=None, ignore_case=False, ignore_punctuation=True, ignore_numbers=True),
    ],
)
def test_exact_match_settings_agree_with_lm_eval(settings):
    from lm_eval.api.metrics import exact_match_hf_evaluate

    rng = random.Random(1)
    alphabet = "aA1 .!,\u0130\x00Σς"
    for _ in range(3000):
        a = "".join(rng.choices(alphabet, k=rng.randint(0, 6)))
        b = a if rng.random() < 0.3 else "".join(rng.choices(alphabet, k=rng.randint(0, 6)))
        want = float(exact_match_hf_evaluate(predictions=[a], references=[b], **settings)["exact_match"])
        assert exact_match(a, b, **settings) == want, (a, b)


def test_hand_worked_extractions():
    assert strict_match(NATALIA) == "72" and flexible_extract(NATALIA) == "72"
    assert strict_match("so #### 1,200 apples") == "1,200"
    assert strict_match("#### 2\n#### 3") == "2"  # the first ####
    assert strict_match("The answer is 7.") == FALLBACK  # no ####
    assert strict_match("The answer is 7.", pattern=COT_STRICT_PATTERN) == "7"
    assert flexible_extract("It costs $1,000.") == "$1,000."
    assert flexible_extract("-3") == "-3"
    assert flexible_extract("the answer is 7 or 8") == "8"  # the last match
    assert flexible_extract("5") == "5"  # one digit: only the second group matches
    assert flexible_extract("no number here") == FALLBACK
    assert flexible_extract("I think it is 12. Not sure...") == "..."  # lm-eval's regex takes an ellipsis
    assert flexible_extract(None) == FALLBACK
    assert regex_extract("a1 b22", r"([a-z])(\d+)", group_select=-1) == "b"
    with pytest.raises(TypeError, match="str or None"):
        flexible_extract(12)


def test_hand_worked_normalisation_and_scores():
    assert normalize(NATALIA) == "72"  # the solution up to the last "#### " is removed
    assert normalize("$1,000.") == "1000"
    assert normalize("So #### 1,234.\n#### -5.") == "-5"
    assert normalize("ABC") == "abc" and normalize("ABC", ignore_case=False) == "ABC"
    # numpy's fixed-width strings: "İx".lower() is "i" + U+0307 + "x", cut back to 2 characters; NULs dropped
    assert normalize("\u0130x") == "i\u0307" and normalize("7\x00\x00") == "7"
    assert exact_match("$1,000.", "Total.\n#### 1000") == 1.0
    assert exact_match("18.0", "#### 18") == 0.0  # strings, not values: lm-eval counts 18.0 as a miss
    assert exact_match("-3", "#### 3") == 0.0
    assert score("She has 3 + 4 = 7 cats.\n#### 7", "3 + 4 = 7\n#### 7") == {
        "exact_match,strict-match": 1.0,
        "exact_match,flexible-extract": 1.0,
    }
    assert score("She has 3 + 4 = 7 cats.", "3 + 4 = 7\n#### 7") == {
        "exact_match,strict-match": 0.0,  # "[invalid]": no ####
        "exact_match,flexible-extract": 1.0,
    }
    assert score("#### 7\nthen 8 more", "#### 7") == {
        "exact_match,strict-match": 1.0,
        "exact_match,flexible-extract": 0.0,  # the last number is 8
    }
    with pytest.raises(TypeError, match="str"):
        normalize(None)
