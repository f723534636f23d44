"""GSM8K scored exactly as lm-evaluation-harness's ``gsm8k`` task scores it: two regex filters, then
exact match after normalisation.

Teaches why a maths score depends on answer *extraction* as much as on the model. Each generation is
read twice: "strict-match" takes the number after the first ``#### `` (the format of GSM8K's own
solutions, which few-shot prompts teach), "flexible-extract" takes the last number-like run of
characters anywhere. Both are compared with the gold solution *as strings* after the same
normalisation (commas, ``$``, everything up to the last ``#### `` and a final ``.`` removed, lower-cased),
so ``18.0`` does not match ``18``. Unlike :mod:`gpt.data.gsm8k`, which compares the numbers' values (as
the fine-tuning loop does), this module reproduces lm-eval's strings to the character, so our GSM8K score
and lm-eval's are the same number.

Reference: lm-evaluation-harness 0.4 ``lm_eval/tasks/gsm8k/gsm8k.yaml`` (filters and metric settings),
``lm_eval/filters/extraction.py`` (``RegexFilter``), ``lm_eval/filters/selection.py`` (``take_first``)
and ``lm_eval/api/metrics.py`` (``exact_match_hf_evaluate``); ``tests/test_evals_gsm8k.py`` runs those on
the 1,319 test answers and on adversarial generations and finds no difference.
"""

import re
import string

# -- lm_eval/tasks/gsm8k/gsm8k.yaml (task version 3.0) -------------------------------------------------
DOC_TO_TEXT = "Question: {question}\nAnswer:"  # doc_to_target is the whole solution, "... #### 72"
NUM_FEWSHOT = 5  # drawn from the train split
UNTIL = ("Question:", "</s>", "<|im_end|>")  # generation_kwargs.until, greedy
STRICT_PATTERN = r"#### (\-?[0-9\.\,]+)"  # filter "strict-match": regex, then take_first
FLEXIBLE_PATTERN = r"(-?[$0-9.,]{2,})|(-?[0-9]+)"  # filter "flexible-extract": regex group_select=-1
FLEXIBLE_GROUP_SELECT = -1  # the last match
FALLBACK = "[invalid]"  # RegexFilter's value when nothing matches
# metric_list: exact_match with these settings, applied to the prediction and to the gold solution alike
REGEXES_TO_IGNORE = (",", r"\$", "(?s).*#### ", r"\.$")
IGNORE_CASE = True
IGNORE_PUNCTUATION = False
# gsm8k-cot.yaml's strict-match reads "The answer is N." instead (chain-of-thought few-shot prompts)
COT_STRICT_PATTERN = r"The answer is (\-?[0-9\.\,]+)."


def regex_extract(text: str | None, pattern: str, group_select: int = 0, fallback: str = FALLBACK) -> str:
    """lm-eval's ``RegexFilter`` on one response: ``re.findall``, the match at ``group_select``; for a
    pattern with several groups, the first non-empty one; stripped. ``fallback`` when nothing matches.

    ``None`` reads as ``""`` (lm-eval's treatment of a missing response)."""
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str or None, got {type(text).__name__}")
    matches = re.findall(pattern, text)
    if not matches:
        return fallback
    match = matches[group_select]
    if isinstance(match, tuple):  # findall gives one tuple per match when the pattern has 2+ groups
        groups = [g for g in match if g]
        match = groups[0] if groups else fallback
    return match.strip()


def strict_match(text: str | None, pattern: str = STRICT_PATTERN) -> str:
    """The number after the first ``#### `` (``"#### 1,200"`` -> ``"1,200"``), or ``"[invalid]"``."""
    return regex_extract(text, pattern, group_select=0)


def flexible_extract(text: str | None) -> str:
    """The last run of 2+ characters of ``$0-9.,`` or the last integer (``"It costs $1,000."`` ->
    ``"$1,000."``), or ``"[invalid]"``. Unnormalised: :func:`exact_match` drops the ``$``, ``,`` and ``.``."""
    return regex_extract(text, FLEXIBLE_PATTERN, group_select=FLEXIBLE_GROUP_SELECT)


def _numpy_op(value: str, itemsize: int | None, op) -> tuple[str, int]:
    # lm-eval keeps the strings in a one-element numpy unicode array: its width is the string's length when
    # the array was made, an elementwise op (lower, translate) keeps that width and truncates a longer result
    # ("İ".lower() is 2 characters), and reading an element back drops trailing NUL characters
    if itemsize is None:  # a Python str becomes an array here
        itemsize = len(value)
        value = value.rstrip("\x00")
    return op(value)[:itemsize].rstrip("\x00"), itemsize


def normalize(
    s: str,
    regexes_to_ignore=REGEXES_TO_IGNORE,
    ignore_case: bool = IGNORE_CASE,
    ignore_punctuation: bool = IGNORE_PUNCTUATION,
    ignore_numbers: bool = False,
) -> str:
    """``s`` as lm-eval's ``exact_match`` compares it, one item at a time: each regex removed in order
    (``re.sub``), then lower-cased, then punctuation and digits deleted when asked, with numpy's string
    storage rules (fixed width, trailing NULs dropped) reproduced."""
    if not isinstance(s, str):
        raise TypeError(f"expected a str, got {type(s).__name__}")
    value, itemsize = s, None
    if regexes_to_ignore is None:
        value, itemsize = _numpy_op(value, None, str)
    else:
        for pattern in regexes_to_ignore:  # each step makes a new array from the re.sub result
            value, itemsize = _numpy_op(re.sub(pattern, "", value), None, str)
    if ignore_case:
        value, itemsize = _numpy_op(value, itemsize, str.lower)
    if ignore_punctuation:
        table = str.maketrans("", "", string.punctuation)
        value, itemsize = _numpy_op(value, itemsize, lambda v: v.translate(table))
    if ignore_numbers:
        table = str.maketrans("", "", string.digits)
        value, itemsize = _numpy_op(value, itemsize, lambda v: v.translate(table))
    return value


def exact_match(
    pred: str,
    target: str,
    regexes_to_ignore=REGEXES_TO_IGNORE,
    ignore_case: bool = IGNORE_CASE,
    ignore_punctuation: bool = IGNORE_PUNCTUATION,
    ignore_numbers: bool = False,
) -> float:
    """1.0 when ``pred`` and ``target`` are equal after :func:`normalize` with the same settings, else 0.0."""
    flags = (regexes_to_ignore, ignore_case, ignore_punctuation, ignore_numbers)
    return float(normalize(pred, *flags) == normalize(target, *flags))


def score(generation: str | None, target: str) -> dict[str, float]:
    """Both of the ``gsm8k`` task's scores for one generation; ``target`` is the whole gold solution
    (``"... #### 72"``), as the task's ``doc_to_target`` gives it."""
    return {
        "exact_match,strict-match": exact_match(strict_match(generation), target),
        "exact_match,flexible-extract": exact_match(flexible_extract(generation), target),
    }
