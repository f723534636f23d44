"""The tokenizers BLEU runs before counting n-grams: ``13a`` (the WMT default) and ``none``.

What it teaches: BLEU numbers are only comparable when hypotheses and references are tokenized the same
way, which is why Post (2018, "A Call for Clarity in Reporting BLEU Scores") made the tokenizer part of
the score and put it in the signature. ``13a`` is the tokenization of the NIST script ``mteval-v13a.pl``
used by WMT: it unescapes four HTML entities, puts spaces around punctuation and symbols, splits periods
and commas off words unless they sit inside a number (``3.14``, ``1,000``), splits a dash that follows a
digit, and collapses whitespace. ``none`` leaves the text as it is (it then splits on whitespace only).

Reference: sacrebleu 2.x, ``sacrebleu/tokenizers/tokenizer_13a.py`` and ``tokenizer_re.py``; the tests
compare every output string with sacrebleu's.
"""

import re

# Each rule is (pattern, replacement), applied in order.
_RULES_13A = [
    # Space out ASCII symbols and punctuation, except '.', ',', "'" and '-' which need context below.
    # The class is the printable ASCII ranges space-& ( -+ : -@ [ -` { -~ plus '/'.
    (re.compile(r"([ -&(-+:-@/\[-`{-~])"), r" \1 "),
    # A period or comma after a non-digit ("end." -> "end ."), ...
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),
    # ... or before a non-digit ("3,a" -> "3 , a"); "3.14" and "1,000" stay whole.
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),
    # A dash after a digit ("1990-1995" -> "1990 - 1995").
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),
]


def tokenize_13a(line: str) -> str:
    """``line`` tokenized as mteval-v13a does; tokens are joined by single spaces."""
    line = line.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:
        for entity, char in (("&quot;", '"'), ("&amp;", "&"), ("&lt;", "<"), ("&gt;", ">")):
            line = line.replace(entity, char)
    line = f" {line} "
    for pattern, repl in _RULES_13A:
        line = pattern.sub(repl, line)
    return " ".join(line.split())


def tokenize_none(line: str) -> str:
    """No tokenization: BLEU then splits on whitespace only."""
    return line


TOKENIZERS = {"13a": tokenize_13a, "none": tokenize_none}


def get_tokenizer(name: str):
    """The tokenizer function called ``name`` (a key of :data:`TOKENIZERS`)."""
    if name not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer {name!r}; choose one of {sorted(TOKENIZERS)}")
    return TOKENIZERS[name]
