"""GSM8K: grade-school maths word problems with worked solutions, and how a model's answer is graded.

Each record is a ``question`` and an ``answer``: a worked solution in short sentences, with calculator
annotations such as ``48/2 = <<48/2=24>>24``, ending in a line ``#### 72`` that holds the final number.
Teaches the two halves of a task metric: the *gold* answer is read from that ``####`` line
(:func:`final_answer`); a *generated* answer is read the same way when the model learned the format, and
otherwise from the last number it wrote (:func:`extract_answer`); the two are compared as numbers, so
``18.0``, ``$18`` and ``18`` all match (:func:`exact_match`). Fine-tuning (``lora``) and the evals read
the same functions, so their accuracies are comparable.

Reference: Cobbe et al. 2021, "Training Verifiers to Solve Math Word Problems"; openai/grade-school-math
``grade_school_math/dataset.py`` (``extract_answer`` on ``#### ``); lm-evaluation-harness ``gsm8k``
(its "flexible-extract" filter takes the last number).
"""

import json
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from gpt.data.paths import dataset_path

SPLITS = ("train", "test")
ANSWER_MARK = "####"
# a number as people write it: optional sign and currency, thousands commas, an optional decimal part
NUMBER = re.compile(r"-?\$?\d(?:[\d,]*\d)?(?:\.\d+)?")
MARKED = re.compile(ANSWER_MARK + r"\s*(" + NUMBER.pattern + ")")  # "#### 1,200": the number right after
CALCULATOR = re.compile(r"<<[^<>]*>>")  # GSM8K's calculator annotations, <<48/2=24>>


@dataclass(frozen=True)
class GSM8KProblem:
    """One GSM8K record: the question, its worked solution (ending ``#### N``) and that final number."""

    question: str
    answer: str

    @property
    def final(self) -> str:
        return final_answer(self.answer)


def load_gsm8k(split: str = "train", limit: int | None = None) -> list[GSM8KProblem]:
    """The first ``limit`` (default: all) problems of ``$LLM_COURSE_DATA/gsm8k/<split>.jsonl``, in file
    order (7,473 train, 1,319 test)."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r}; GSM8K has {SPLITS}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    path = dataset_path("gsm8k", f"{split}.jsonl")
    problems = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if limit is not None and len(problems) >= limit:
                break
            if not line.strip():
                continue
            record = json.loads(line)
            if not isinstance(record, dict) or not {"question", "answer"} <= record.keys():
                raise ValueError(f"{path}:{line_no}: expected an object with 'question' and 'answer'")
            problems.append(GSM8KProblem(record["question"], record["answer"]))
    return problems


def strip_calculator(answer: str) -> str:
    """The solution without its ``<<48/2=24>>`` annotations (the text a reader sees)."""
    return CALCULATOR.sub("", answer)


def _clean_number(text: str) -> str:
    return text.replace(",", "").replace("$", "")


def final_answer(answer_text: str) -> str:
    """The number right after a solution's last ``####``, commas and ``$`` removed (``"#### 1,200"`` ->
    ``"1200"``). For gold answers, so a record without the line, or with no number on it, is a ValueError.
    """
    if not isinstance(answer_text, str):
        raise TypeError(f"answer_text must be a str, got {type(answer_text).__name__}")
    if ANSWER_MARK not in answer_text:
        raise ValueError(f"no '{ANSWER_MARK} N' line in the answer {answer_text[-80:]!r}")
    match = MARKED.match(answer_text, answer_text.rindex(ANSWER_MARK))
    if match is None:
        raise ValueError(f"no number right after the last '{ANSWER_MARK}' in {answer_text[-80:]!r}")
    return _clean_number(match.group(1))


def extract_answer(generated_text: str | None) -> str | None:
    """A model's final answer: the number right after its first ``####`` that has one; when it wrote no
    ``#### N``, the last number in the text; None when there is no number at all.

    Commas and ``$`` are removed (``"$1,000"`` -> ``"1000"``); compare with :func:`exact_match`.
    """
    if generated_text is None:
        return None
    if not isinstance(generated_text, str):
        raise TypeError(f"generated_text must be a str or None, got {type(generated_text).__name__}")
    match = MARKED.search(generated_text)
    if match is not None:
        return _clean_number(match.group(1))
    numbers = NUMBER.findall(generated_text)
    return _clean_number(numbers[-1]) if numbers else None


def parse_number(text: str | None) -> Decimal | None:
    """``"18.0"``, ``"$1,000"``, ``" -3 "`` -> an exact Decimal; None if ``text`` is not one number."""
    if text is None:
        return None
    if not isinstance(text, str):
        raise TypeError(f"expected a str or None, got {type(text).__name__}")
    text = text.strip().rstrip(".")
    if not NUMBER.fullmatch(text):
        return None
    try:
        return Decimal(_clean_number(text))
    except InvalidOperation:  # unreachable for NUMBER's strings; kept for safety
        return None


def exact_match(pred: str | None, gold: str) -> bool:
    """Whether ``pred`` is the same number as ``gold`` (``"18.0" == "18"``, ``"$1,000" == "1000"``).

    A missing or non-numeric prediction is a miss (False); a gold answer that is not a number is a
    ValueError, since a reference that cannot be matched is a bug in the data, not a wrong answer.
    """
    expected = parse_number(gold)
    if expected is None:
        raise ValueError(f"gold answer {gold!r} is not a number; pass final_answer(record['answer'])")
    got = parse_number(pred)
    return got is not None and got == expected
