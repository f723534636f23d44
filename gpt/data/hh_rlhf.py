"""Anthropic's HH-RLHF preference data: each comparison as one prompt conversation and two final replies.

Teaches what a preference data set is made of. HH-RLHF stores each comparison as two whole transcripts,
``"\\n\\nHuman: ...\\n\\nAssistant: ..."``, that share every turn but the last assistant reply.
:func:`parse_transcript` turns one into chat messages (Human -> user, Assistant -> assistant),
:func:`pair_from_record` checks that both share the prompt and keeps the two final replies, and
:func:`load_preferences` reads the file, drops pairs whose replies are identical (they say nothing about
preference) and reports how many. It sits in ``gpt.data`` because two rungs read it: ``rl`` trains on it
(``rl.preferences`` adds the split and the tokenization) and ``evals`` checks reference-free methods
against its human choices (``evals.compare.preference``).

The data contain offensive text (the source's content warning): nothing here prints a record's text;
errors name the record index only.

Reference: Bai et al. 2022, "Training a Helpful and Harmless Assistant with Reinforcement Learning from
Human Feedback" (the data); github.com/anthropics/hh-rlhf ``harmless-base/test.jsonl.gz``; TRL
``extract_prompt`` (trl/data_utils.py), which splits the shared prompt off the same way.
"""

import gzip
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gpt.data.paths import dataset_path

HH_FILE = ("hh_rlhf_harmless_base", "test.jsonl.gz")
ROLES = {"Human": "user", "Assistant": "assistant"}
TURN = re.compile(r"\n\n(Human|Assistant):[ ]?")  # a turn header; the text up to the next one is its content


@dataclass(frozen=True)
class PreferencePair:
    """One comparison: ``prompt`` (the conversation so far, ending with a user turn) and two replies."""

    index: int  # the record's line number (0-based) in its source file
    prompt: tuple[dict[str, str], ...]  # ({"role": "user" | "assistant", "content": str}, ...)
    chosen: str  # the reply the labeller preferred
    rejected: str


@dataclass(frozen=True)
class PreferenceReport:
    """What loading did: records read, pairs kept, identical pairs dropped (by index)."""

    records: int
    kept: int
    identical: int  # pairs dropped because chosen == rejected
    identical_indices: tuple[int, ...]
    empty_replies: int  # kept pairs with an empty chosen or rejected reply (HH has a few)
    merged: int  # records with consecutive same-speaker turns, merged into one message


def parse_transcript(text: str, index: int) -> list[dict[str, str]]:
    """``"\\n\\nHuman: a\\n\\nAssistant: b"`` -> [{"role": "user", "content": "a"}, {"role": ...}].

    Consecutive turns of one speaker (HH has a few, e.g. a reply split in two) are one message, their
    texts joined by a blank line. ValueError naming ``index`` for text that does not start with a header."""
    if not isinstance(text, str):
        raise TypeError(f"record {index}: a transcript must be a str, got {type(text).__name__}")
    parts = TURN.split(text)  # ["", speaker, content, speaker, content, ...]
    if len(parts) < 3 or parts[0] != "":
        raise ValueError(
            f"record {index}: a transcript must start with '\\n\\nHuman: ' or '\\n\\nAssistant: ' (HH format)"
        )
    messages = []
    for speaker, content in zip(parts[1::2], parts[2::2], strict=True):
        role = ROLES[speaker]
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"] += "\n\n" + content.strip()
        else:
            messages.append({"role": role, "content": content.strip()})
    return messages


def pair_from_record(record: dict, index: int) -> PreferencePair:
    """A ``{"chosen": str, "rejected": str}`` record -> a pair; ValueError naming ``index`` when the two
    transcripts do not end in an assistant reply or do not share every earlier turn."""
    if not isinstance(record, dict) or not {"chosen", "rejected"} <= record.keys():
        raise ValueError(f"record {index}: expected an object with 'chosen' and 'rejected' transcripts")
    chosen = parse_transcript(record["chosen"], index)
    rejected = parse_transcript(record["rejected"], index)
    for name, msgs in (("chosen", chosen), ("rejected", rejected)):
        if msgs[-1]["role"] != "assistant" or len(msgs) < 2:
            raise ValueError(f"record {index}: the {name} transcript must end with an assistant reply")
    if chosen[:-1] != rejected[:-1]:
        raise ValueError(f"record {index}: chosen and rejected differ before their final reply")
    return PreferencePair(index, tuple(chosen[:-1]), chosen[-1]["content"], rejected[-1]["content"])


def read_pairs(lines: Sequence[str]) -> tuple[list[PreferencePair], PreferenceReport]:
    """JSON lines -> (pairs, report); identical pairs counted and dropped. ValueError naming a bad line."""
    pairs, identical, merged = [], [], 0
    for index, line in enumerate(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"record {index}: not valid JSON ({err.msg} at column {err.colno})") from None
        pair = pair_from_record(record, index)
        turns = len(pair.prompt) + 1
        merged += any(len(TURN.findall(record[k])) > turns for k in ("chosen", "rejected"))
        if pair.chosen == pair.rejected:
            identical.append(index)
        else:
            pairs.append(pair)
    empty = sum(not p.chosen or not p.rejected for p in pairs)
    report = PreferenceReport(len(lines), len(pairs), len(identical), tuple(identical), empty, merged)
    return pairs, report


def load_preferences(path: str | Path | None = None) -> tuple[list[PreferencePair], PreferenceReport]:
    """Every pair of HH-RLHF harmless-base (default: the course copy under ``LLM_COURSE_DATA``)."""
    path = dataset_path(*HH_FILE) if path is None else Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        lines = [line for line in f.read().split("\n") if line.strip()]
    return read_pairs(lines)
