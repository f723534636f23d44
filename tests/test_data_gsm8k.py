"""GSM8K reading and grading, worked by hand: gold answers from ``#### N``, a model's answer from its
``####`` or its last number, numbers compared as numbers; malformed, empty and None inputs."""

import json

import pytest

from gpt.data.gsm8k import (
    GSM8KProblem,
    exact_match,
    extract_answer,
    final_answer,
    load_gsm8k,
    parse_number,
    strip_calculator,
)

NATALIA = (
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72"
)


def test_final_answer_reads_the_hash_line():
    assert final_answer(NATALIA) == "72"
    assert final_answer("So 1,000 + 200 = 1,200.\n#### 1,200") == "1200"
    assert final_answer("She lost money.\n#### -5") == "-5"
    assert final_answer("#### $3.50") == "3.50"
    assert final_answer("a #### 1\nthen #### 2") == "2"  # the last line is the answer line


@pytest.mark.parametrize("bad", ["", "no answer line", "#### ", "#### none", "#### about 5"])
def test_final_answer_refuses_malformed_gold(bad):
    with pytest.raises(ValueError, match="####"):
        final_answer(bad)


def test_final_answer_type():
    with pytest.raises(TypeError, match="str"):
        final_answer(None)


def test_extract_answer_prefers_the_hash_line_then_the_last_number():
    assert extract_answer(NATALIA) == "72"
    assert extract_answer("#### 5 apples, not 6") == "5"
    assert extract_answer("She has 3 cats and 4 dogs, so 7 pets.") == "7"
    assert extract_answer("It costs $1,000.") == "1000"
    assert extract_answer("The answer is 18.0") == "18.0"
    assert extract_answer("#### unknown, but 12 then 13") == "13"  # no number right after ####
    assert extract_answer("first #### 1 then #### 2") == "1"
    assert extract_answer("#### x then #### 2, not 3") == "2"


@pytest.mark.parametrize("text", [None, "", "no digits here", "####"])
def test_extract_answer_without_a_number(text):
    assert extract_answer(text) is None


def test_extract_answer_type():
    with pytest.raises(TypeError, match="str or None"):
        extract_answer(72)


def test_parse_number():
    assert parse_number("18.0") == parse_number("18")
    assert str(parse_number("$1,000")) == "1000"
    assert str(parse_number(" -3 ")) == "-3"
    assert parse_number("72.") == parse_number("72")
    for bad in (None, "", "abc", "1e5", "12 apples", "--3"):
        assert parse_number(bad) is None


def test_exact_match_normalises_numbers():
    assert exact_match("18.0", "18")
    assert exact_match("$1,000", "1000")
    assert exact_match("1000", "1,000")
    assert exact_match("-5", "-5.00")
    assert not exact_match(".5", "0.5")  # a number must start with a digit, as GSM8K writes them
    assert not exact_match("17", "18")
    assert not exact_match("-18", "18")
    assert not exact_match(None, "18")
    assert not exact_match("", "18")
    assert not exact_match("eighteen", "18")


def test_exact_match_refuses_a_gold_that_is_not_a_number():
    with pytest.raises(ValueError, match="not a number"):
        exact_match("18", "eighteen")
    with pytest.raises(ValueError, match="not a number"):
        exact_match("18", None)


def test_extract_then_match_end_to_end():
    generated = "Each box has 6 eggs, 4 boxes is 6*4 = 24 eggs.\n#### 24.0"
    assert exact_match(extract_answer(generated), final_answer("6*4=<<6*4=24>>24\n#### 24"))


def test_strip_calculator():
    assert strip_calculator(NATALIA).splitlines()[0] == "Natalia sold 48/2 = 24 clips in May."
    assert "<<" not in strip_calculator(NATALIA) and strip_calculator(NATALIA).endswith("#### 72")


def test_load_gsm8k_from_the_data_root(tmp_path, monkeypatch):
    folder = tmp_path / "gsm8k"
    folder.mkdir()
    rows = [{"question": f"q{i}", "answer": f"w{i}\n#### {i}"} for i in range(3)]
    (folder / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    monkeypatch.setenv("LLM_COURSE_DATA", str(tmp_path))
    problems = load_gsm8k("test")
    assert problems == [GSM8KProblem(f"q{i}", f"w{i}\n#### {i}") for i in range(3)]
    assert [p.final for p in problems] == ["0", "1", "2"]
    assert load_gsm8k("test", limit=2) == problems[:2]
    with pytest.raises(FileNotFoundError, match="LLM_COURSE_DATA"):
        load_gsm8k("train")
    with pytest.raises(ValueError, match="split"):
        load_gsm8k("validation")
    (folder / "test.jsonl").write_text('{"question": "q"}\n')
    with pytest.raises(ValueError, match=r"test\.jsonl:1"):
        load_gsm8k("test")


def test_the_shipped_files(data_file):
    data_file("gsm8k", "train.jsonl")
    train, test = load_gsm8k("train"), load_gsm8k("test")
    assert (len(train), len(test)) == (7473, 1319)  # SOURCE.md's record counts
    assert train[0].question.startswith("Natalia sold clips") and train[0].final == "72"
    for p in train + test:  # every gold answer parses as a number
        assert parse_number(p.final) is not None
