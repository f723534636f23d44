"""The Porter stemmer: strip English suffixes in five rule steps so "connected", "connecting" and
"connection" all become "connect".

What it teaches (Porter 1980, "An algorithm for suffix stripping", Program 14(3)): a word is read as
consonant (C) and vowel (V) runs, [C](VC)^m[V], and m, the **measure**, says roughly how many syllables
a stem keeps. Each step is an ordered list of (suffix -> replacement) rules; the *longest listed* suffix
that the word ends with is the only one tried, and it fires only if the stem left behind satisfies the
rule's condition (m > 0, m > 1, contains a vowel, ends consonant-vowel-consonant ...). ROUGE stems with
it so that "cats" matches "cat".

Three variants, the modes of NLTK's ``PorterStemmer``: ``"original"`` (the 1980 paper), ``"martin"``
(the fixes in Martin Porter's own later implementations: "bli" -> "ble", "logi" -> "log", words of one
or two letters left alone) and ``"nltk"`` (NLTK's further changes: a small table of irregular forms,
"ies"/"ied" -> "ie" in four-letter words, "y" -> "i" only after a consonant, "fulli" -> "ful", and a
two-letter stem such as "ag" counting as consonant-vowel-consonant). ``rouge_score`` uses NLTK's default,
``"nltk"``.

Reference: NLTK, ``nltk/stem/porter.py`` (``PorterStemmer`` and its three modes); the tests compare every
word of the Multi30k and WikiText-2 vocabularies in each mode.
"""

MODES = ("original", "martin", "nltk")
VOWELS = frozenset("aeiou")

# NLTK mode: words stemmed by table, not by rule.
_IRREGULAR = {
    "skies": "sky",
    "sky": "sky",
    "dying": "die",
    "lying": "lie",
    "tying": "tie",
    "news": "news",
    "innings": "inning",
    "inning": "inning",
    "outings": "outing",
    "outing": "outing",
    "cannings": "canning",
    "canning": "canning",
    "howe": "howe",
    "proceed": "proceed",
    "exceed": "exceed",
    "succeed": "succeed",
}

_STEP3 = [
    ("icate", "ic"),
    ("ative", ""),
    ("alize", "al"),
    ("iciti", "ic"),
    ("ical", "ic"),
    ("ful", ""),
    ("ness", ""),
]
_STEP4 = ["al", "ance", "ence", "er", "ic", "able", "ible", "ant", "ement", "ment", "ent", "ion", "ou", "ism"]
_STEP4 += ["ate", "iti", "ous", "ive", "ize"]


def _consonants(word: str) -> list[bool]:
    """True where ``word`` has a consonant: not a, e, i, o, u, and a 'y' only after a vowel or first."""
    flags = []
    for i, ch in enumerate(word):
        if ch == "y":
            flags.append(i == 0 or not flags[i - 1])
        else:
            flags.append(ch not in VOWELS)
    return flags


def measure(stem: str) -> int:
    """m in [C](VC)^m[V]: the number of vowel-run-then-consonant-run transitions."""
    c = _consonants(stem)
    return sum(1 for i in range(1, len(c)) if c[i] and not c[i - 1])


def has_vowel(stem: str) -> bool:
    return not all(_consonants(stem))


def ends_double_consonant(word: str) -> bool:
    """Porter's *d: the word ends in two equal consonants ("-tt", "-ss")."""
    return len(word) >= 2 and word[-1] == word[-2] and _consonants(word)[-1]


class PorterStemmer:
    """``PorterStemmer(mode).stem(word)``; ``mode`` is one of :data:`MODES`."""

    def __init__(self, mode: str = "nltk"):
        if mode not in MODES:
            raise ValueError(f"unknown Porter mode {mode!r}; choose one of {MODES}")
        self.mode = mode

    def ends_cvc(self, word: str) -> bool:
        """Porter's *o: the word ends consonant-vowel-consonant, the last not w, x or y ("hop", "fil").

        NLTK mode also accepts a two-letter vowel-consonant word ("ag" in "aging")."""
        c = _consonants(word)
        if len(word) >= 3 and c[-3] and not c[-2] and c[-1] and word[-1] not in "wxy":
            return True
        return self.mode == "nltk" and len(word) == 2 and not c[0] and c[1]

    @staticmethod
    def _apply(word: str, rules: list[tuple[str, str]], condition) -> str:
        """The first rule whose suffix ends ``word`` replaces it if ``condition(stem)`` holds."""
        for suffix, replacement in rules:
            if word.endswith(suffix):
                stem = word[: len(word) - len(suffix)]
                return stem + replacement if condition(stem) else word
        return word

    def step1a(self, word: str) -> str:
        """Plurals: caresses -> caress, ponies -> poni, cats -> cat."""
        if self.mode == "nltk" and len(word) == 4 and word.endswith("ies"):
            return word[:-3] + "ie"  # ties -> tie
        rules = [("sses", "ss"), ("ies", "i"), ("ss", "ss"), ("s", "")]
        return self._apply(word, rules, lambda stem: True)

    def step1b(self, word: str) -> str:
        """Past tense and -ing: agreed -> agree, plastered -> plaster, hopping -> hop, filing -> file."""
        if self.mode == "nltk" and word.endswith("ied"):
            return word[:-3] + ("ie" if len(word) == 4 else "i")
        if word.endswith("eed"):
            return word[:-1] if measure(word[:-3]) > 0 else word
        for suffix in ("ed", "ing"):
            if word.endswith(suffix) and has_vowel(word[: -len(suffix)]):
                stem = word[: -len(suffix)]
                break
        else:
            return word
        # Tidy the stem so that later steps see a whole suffix: conflat -> conflate, hopp -> hop.
        if stem.endswith(("at", "bl", "iz")):
            return stem + "e"
        if ends_double_consonant(stem):
            return stem[:-1] if stem[-1] not in "lsz" else stem
        if measure(stem) == 1 and self.ends_cvc(stem):
            return stem + "e"
        return stem

    def step1c(self, word: str) -> str:
        """Final y -> i: happy -> happi (NLTK: only after a consonant that is not the whole stem)."""
        if not word.endswith("y"):
            return word
        stem = word[:-1]
        ok = (len(stem) > 1 and _consonants(stem)[-1]) if self.mode == "nltk" else has_vowel(stem)
        return stem + "i" if ok else word

    def step2(self, word: str) -> str:
        """Double suffixes to single ones when m > 0: relational -> relate, hopefulness -> hopeful."""
        if self.mode == "nltk" and word.endswith("alli") and measure(word[:-4]) > 0:
            return self.step2(word[:-4] + "al")
        rules = [("ational", "ate"), ("tional", "tion"), ("enci", "ence"), ("anci", "ance"), ("izer", "ize")]
        rules.append(("abli", "able") if self.mode == "original" else ("bli", "ble"))
        rules += [("alli", "al"), ("entli", "ent"), ("eli", "e"), ("ousli", "ous"), ("ization", "ize")]
        rules += [("ation", "ate"), ("ator", "ate"), ("alism", "al"), ("iveness", "ive"), ("fulness", "ful")]
        rules += [("ousness", "ous"), ("aliti", "al"), ("iviti", "ive"), ("biliti", "ble")]
        if self.mode == "nltk":
            rules.append(("fulli", "ful"))
            if word.endswith("logi"):
                # NLTK measures the stem with its "l" kept: "analogi" -> measure("anal")
                return word[:-1] if measure(word[:-3]) > 0 else word
        if self.mode == "martin":
            rules.append(("logi", "log"))
        return self._apply(word, rules, lambda stem: measure(stem) > 0)

    def step3(self, word: str) -> str:
        """-ic-, -full, -ness etc. when m > 0: triplicate -> triplic, goodness -> good."""
        return self._apply(word, _STEP3, lambda stem: measure(stem) > 0)

    def step4(self, word: str) -> str:
        """Drop the remaining suffix when m > 1: allowance -> allow, adoption -> adopt."""

        def condition(stem: str) -> bool:
            if word.endswith("ion") and not stem.endswith(("s", "t")):
                return False
            return measure(stem) > 1

        return self._apply(word, [(s, "") for s in _STEP4], condition)

    def step5(self, word: str) -> str:
        """Final e and ll: probate -> probat, cease -> ceas, controll -> control."""
        if word.endswith("e"):
            stem = word[:-1]
            m = measure(stem)
            if m > 1 or (m == 1 and not self.ends_cvc(stem)):
                word = stem
        if word.endswith("ll") and measure(word[:-1]) > 1:
            word = word[:-1]
        return word

    def stem(self, word: str) -> str:
        """The stem of ``word`` (lowercased first)."""
        w = word.lower()
        if self.mode == "nltk" and w in _IRREGULAR:
            return _IRREGULAR[w]
        if self.mode != "original" and len(word) <= 2:
            return w
        for step in (self.step1a, self.step1b, self.step1c, self.step2, self.step3, self.step4, self.step5):
            w = step(w)
        return w
