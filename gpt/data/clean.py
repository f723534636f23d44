"""Cleaning already OCR-ed or scraped text: unicode, whitespace, hyphenation, ligatures, boilerplate.

Teaches the normalisation steps applied before filtering and dedup, each one a small pure function
so its effect can be shown on a before/after example (Week 4.1):

- ``normalize_unicode``: NFC, so "é" typed as e + combining accent and as one code point are the same
  string (and hash the same in dedup). NFKC would also fold ligatures and full-width forms, but it
  changes superscripts, fractions and math letters too, so we fold only the ligatures we list.
- ``replace_ligatures``: the Latin typographic ligatures U+FB00..U+FB06 (ﬀ ﬁ ﬂ ﬃ ﬄ ﬅ ﬆ) that PDF text
  extraction leaves behind.
- ``remove_control_chars``: C0/C1 control characters, zero-width characters and the soft hyphen;
  tabs and newlines stay.
- ``dehyphenate``: "infor-\\nmation" -> "information\\n" when a lowercase letter ends a line with a
  hyphen and a lowercase letter starts the next (a real compound split at a line end, "well-\\nknown",
  is joined wrongly as "wellknown": the price of a rule without a dictionary).
- ``fix_ocr_confusions``: only digit/letter swaps *inside* a lowercase word ("w0rd" -> "word",
  "he1p" -> "help", "a|so" -> "also"). We do not touch "rn"/"m" or "cl"/"d": they are also real letter
  pairs ("modern", "clear") and fixing them needs a dictionary.
- ``normalize_whitespace``: non-breaking and other Unicode spaces -> " ", runs of spaces collapsed,
  trailing spaces dropped, at most one blank line in a row.
- ``strip_boilerplate``: drop lines that match boilerplate regexes (page numbers, "Page 3 of 10",
  copyright lines, cookie / subscribe banners); pass your own patterns for a new source.

These steps are for prose. On source code they would do damage (collapsing spaces breaks Python's
indentation), which is why ``prepare`` runs them only with ``clean=True``.

Reference: the cleaning stages of the C4 pipeline (Raffel et al. 2020, Sec. 2.2) and of RefinedWeb
(Penedo et al. 2023, Sec. 3), and ``ftfy`` for what careful unicode repair looks like.
"""

import re
import unicodedata
from dataclasses import dataclass

LIGATURES = {"ﬀ": "ff", "ﬁ": "fi", "ﬂ": "fl", "ﬃ": "ffi", "ﬄ": "ffl", "ﬅ": "st", "ﬆ": "st"}
# zero-width space/joiners, word joiner, BOM, soft hyphen: invisible characters that split words
INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff\u00ad"
BOILERPLATE_PATTERNS = (
    r"^\s*\d{1,4}\s*$",  # a page number alone on its line
    r"^\s*page \d+( of \d+)?\s*$",
    r"^\s*(copyright|©|\(c\)).*\d{4}",  # copyright lines with a year
    r"all rights reserved",
    r"(accept|use) (all )?cookies",
    r"^\s*(click here|subscribe( now)?|sign up for our newsletter)\b",
)


def normalize_unicode(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def replace_ligatures(text: str) -> str:
    return text.translate(str.maketrans(LIGATURES))


def remove_control_chars(text: str) -> str:
    """Drop control (Cc) characters except tab and newline, plus the invisible characters above."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return "".join(c for c in text if c in "\t\n" or (unicodedata.category(c) != "Cc" and c not in INVISIBLE))


def dehyphenate(text: str) -> str:
    """Join a word split by a hyphen at a line end: "infor-\\nmation, is" -> "information,\\nis".

    The line break moves after the joined word and any punctuation stuck to it.
    """
    return re.sub(r"([a-z]+)-[ \t]*\n[ \t]*([a-z]+\S*)[ \t]?", r"\1\2\n", text)


def fix_ocr_confusions(text: str) -> str:
    """0 -> o, 1 -> l, | -> l between two lowercase letters (never inside numbers or capitals)."""
    text = re.sub(r"(?<=[a-z])0(?=[a-z])", "o", text)
    text = re.sub(r"(?<=[a-z])1(?=[a-z])", "l", text)
    return re.sub(r"(?<=[a-z])\|(?=[a-z])", "l", text)


def normalize_whitespace(text: str) -> str:
    text = re.sub(r"[^\S\n\t]", " ", text)  # every Unicode space except newline/tab -> " "
    text = re.sub(r" {2,}", " ", text)
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def strip_boilerplate(text: str, patterns=BOILERPLATE_PATTERNS) -> str:
    """Remove every line that matches one of ``patterns`` (case-insensitive)."""
    rx = re.compile("|".join(f"(?:{p})" for p in patterns), flags=re.IGNORECASE)
    return "\n".join(line for line in text.split("\n") if not rx.search(line))


@dataclass
class CleanConfig:
    """Which steps ``clean_text`` runs, in the order listed."""

    unicode: bool = True
    ligatures: bool = True
    control_chars: bool = True
    dehyphenate: bool = True
    ocr_confusions: bool = True
    boilerplate: bool = True
    whitespace: bool = True


def clean_text(text: str, cfg: CleanConfig | None = None) -> str:
    """Every enabled cleaning step, in a fixed order (unicode first so later regexes see NFC text)."""
    cfg = cfg or CleanConfig()
    if not isinstance(text, str):
        raise TypeError(f"clean_text expects a str, got {type(text).__name__}")
    steps = (
        (cfg.unicode, normalize_unicode),
        (cfg.ligatures, replace_ligatures),
        (cfg.control_chars, remove_control_chars),
        (cfg.dehyphenate, dehyphenate),
        (cfg.ocr_confusions, fix_ocr_confusions),
        (cfg.boilerplate, strip_boilerplate),
        (cfg.whitespace, normalize_whitespace),
    )
    for enabled, step in steps:
        if enabled:
            text = step(text)
    return text


def clean_documents(docs: list[str], cfg: CleanConfig | None = None) -> list[str]:
    return [clean_text(d, cfg) for d in docs]
