"""Every cleaning step on a hand-written OCR-like example, and the whole clean_text chain."""

import pytest

from gpt.data.clean import (
    CleanConfig,
    clean_text,
    dehyphenate,
    fix_ocr_confusions,
    normalize_unicode,
    normalize_whitespace,
    remove_control_chars,
    replace_ligatures,
    strip_boilerplate,
)


def test_nfc_composes_combining_accents():
    decomposed = "cafe\u0301"  # e + COMBINING ACUTE ACCENT
    assert len(decomposed) == 5
    assert normalize_unicode(decomposed) == "café" and len(normalize_unicode(decomposed)) == 4


def test_ligatures():
    assert replace_ligatures("the ﬁrst ﬂoor, ﬀ ﬃ ﬄ") == "the first floor, ff ffi ffl"


def test_control_chars_go_tabs_and_newlines_stay():
    text = "a\x00b\x07c\td\r\ne\u200bf\u00adg\x85h"
    assert remove_control_chars(text) == "abc\td\nefgh"


def test_dehyphenate_joins_lowercase_split_words_only():
    assert dehyphenate("the infor-\nmation is here") == "the information\nis here"
    assert dehyphenate("a line-  \n  break") == "a linebreak\n"
    assert dehyphenate("was expen-\nsive. Then") == "was expensive.\nThen"
    # a capital after the break (a name, a new sentence) or digits: left alone
    assert dehyphenate("Smith-\nJones") == "Smith-\nJones"
    assert dehyphenate("pages 10-\n12") == "pages 10-\n12"


def test_ocr_confusions_inside_lowercase_words_only():
    assert fix_ocr_confusions("the w0rd he1p a|so") == "the word help also"
    # numbers, codes and capitals are untouched; "rn" is never turned into "m"
    assert fix_ocr_confusions("in 2010 the A1 road, x | y, modern") == "in 2010 the A1 road, x | y, modern"


def test_normalize_whitespace():
    text = "  a\u00a0\u00a0b   c  \n\n\n\nd \t\ne  "
    assert normalize_whitespace(text) == "a b c\n\nd\ne"


def test_strip_boilerplate_lines():
    lines = ["Chapter one.", "12", "Page 3 of 10", "Copyright © 2021 Foo Inc.", "All Rights Reserved."]
    text = "\n".join([*lines, "We use cookies to help.", "The end."])
    assert strip_boilerplate(text) == "Chapter one.\nThe end."
    assert strip_boilerplate("keep\nDROP me", patterns=(r"^drop",)) == "keep"


def test_clean_text_chain_and_switches():
    raw = "The ﬁrst infor-\nmation\x0c was a|so\u00a0\u00a0here.\n\n\n\n42\nCopyright 2020 X"
    assert clean_text(raw) == "The first information\nwas also here."
    only_ligatures = CleanConfig(
        unicode=False,
        control_chars=False,
        dehyphenate=False,
        ocr_confusions=False,
        boilerplate=False,
        whitespace=False,
    )
    assert clean_text("ﬁ a|so", only_ligatures) == "fi a|so"
    with pytest.raises(TypeError, match="expects a str"):
        clean_text(b"bytes")
