"""rl.preferences: HH-RLHF transcripts -> (prompt, chosen, rejected) pairs, bad records, split, tokens.

HH-RLHF contains offensive text: assertion messages here name record indices only, never record text.
"""

import gzip
import itertools
import json
import re

import pytest

from gpt.model import IGNORE_INDEX
from rl.preferences import (
    HH_FILE,
    load_preferences,
    pair_example,
    pair_from_record,
    parse_transcript,
    read_pairs,
    split_pairs,
    tokenize_pair,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def record(*turns, chosen="yes", rejected="no"):
    """A record in HH's format: shared turns (alternating Human / Assistant from Human), then the replies."""
    names = ["Human", "Assistant"]
    prefix = "".join(f"\n\n{names[i % 2]}: {t}" for i, t in enumerate(turns))
    return {"chosen": f"{prefix}\n\nAssistant: {chosen}", "rejected": f"{prefix}\n\nAssistant: {rejected}"}


def test_parse_transcript_by_hand():
    text = "\n\nHuman: hi there\n\nAssistant: hello\n\nHuman: 2 + 2?\n\nAssistant: 4"
    assert parse_transcript(text, 0) == [
        {"role": "user", "content": "hi there"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "2 + 2?"},
        {"role": "assistant", "content": "4"},
    ]
    # a role name inside a turn (no blank line before it) is content, not a header
    assert (
        parse_transcript("\n\nHuman: say Assistant: x\n\nAssistant: ok", 0)[0]["content"]
        == "say Assistant: x"
    )
    # two turns of one speaker in a row are one message
    assert parse_transcript("\n\nHuman: q\n\nAssistant: a \n\nAssistant: b", 0) == [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a\n\nb"},
    ]
    assert (
        parse_transcript("\n\nHuman: say Assistant: x\n\nAssistant: ok", 0)[0]["content"]
        == "say Assistant: x"
    )


def test_pair_from_record_keeps_the_shared_prompt_and_the_two_replies():
    pair = pair_from_record(record("q1", "a1", "q2", chosen="good", rejected="bad"), 7)
    assert pair.index == 7
    assert [m["role"] for m in pair.prompt] == ["user", "assistant", "user"]
    assert [m["content"] for m in pair.prompt] == ["q1", "a1", "q2"]
    assert (pair.chosen, pair.rejected) == ("good", "bad")


BAD = {
    "not json": "{chosen",
    "missing key": json.dumps({"chosen": "\n\nHuman: a\n\nAssistant: b"}),
    "no header": json.dumps({"chosen": "Human: a", "rejected": "Human: a"}),
    "ends with user": json.dumps({"chosen": "\n\nHuman: a", "rejected": "\n\nHuman: a"}),
    "prompts differ": json.dumps(
        {"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: z\n\nAssistant: b2"}
    ),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_a_bad_record_raises_one_error_naming_its_index(kind):
    lines = [json.dumps(record("q")), json.dumps(record("q2")), BAD[kind], json.dumps(record("q3"))]
    with pytest.raises(ValueError, match=r"^record 2: "):
        read_pairs(lines)


def test_identical_pairs_are_counted_and_dropped():
    lines = [
        json.dumps(record("q0", chosen="same", rejected="same")),
        json.dumps(record("q1")),
        json.dumps(record("q2", chosen="x", rejected="x")),
        json.dumps(record("q3", chosen="", rejected="something")),
    ]
    lines.append(
        json.dumps(
            {
                "chosen": "\n\nHuman: q\n\nAssistant: a\n\nAssistant: b",
                "rejected": "\n\nHuman: q\n\nAssistant: c",
            }
        )
    )
    pairs, report = read_pairs(lines)
    assert [p.index for p in pairs] == [1, 3, 4]
    assert (report.records, report.kept, report.identical, report.merged) == (5, 3, 2, 1)
    assert pairs[-1].chosen == "a\n\nb"
    assert report.identical_indices == (0, 2)
    assert report.empty_replies == 1


@pytest.fixture(scope="module")
def hh(data_file):
    path = data_file(*HH_FILE)
    with gzip.open(path, "rt", encoding="utf-8") as f:
        raw = [json.loads(line) for line in f if line.strip()]
    return raw, load_preferences(path)


def test_the_hh_file_loads_every_record(hh):
    raw, (pairs, report) = hh
    # the record count is read independently of read_pairs (json per line); SOURCE.md states 2,312
    assert report.records == len(raw)
    assert report.kept + report.identical == report.records
    assert report.kept == len(pairs)
    for i in report.identical_indices:  # a dropped pair's final replies are the same text
        c, r = (parse_transcript(raw[i][k], i)[-1]["content"] for k in ("chosen", "rejected"))
        assert c == r, f"record {i} was dropped as identical but its replies differ"
    merged = 0
    for p in pairs:
        texts = [raw[p.index][k] for k in ("chosen", "rejected")]
        speakers = [re.findall(r"\n\n(Human|Assistant):", t) for t in texts]
        runs = [1 + sum(a != b for a, b in itertools.pairwise(s)) for s in speakers]  # after merging repeats
        merged += any(n < len(s) for n, s in zip(runs, speakers, strict=True))
        assert len(p.prompt) + 1 == runs[0] == runs[1], f"record {p.index}: message count differs"
        assert p.prompt[-1]["role"] == "user", f"record {p.index}: prompt does not end with a user turn"
        assert p.chosen != p.rejected, f"record {p.index}: identical pair kept"
        last = p.chosen.rsplit("\n\n", 1)[-1]
        assert texts[0].rstrip().endswith(last), f"record {p.index}: the chosen reply is not the last turn"
    assert merged == report.merged


def test_split_is_seeded_and_disjoint(hh):
    _, (pairs, _) = hh
    train, val = split_pairs(pairs, val_fraction=0.1, seed=0)
    again_train, again_val = split_pairs(pairs, val_fraction=0.1, seed=0)
    _, other_val = split_pairs(pairs, val_fraction=0.1, seed=1)
    assert len(val) == round(0.1 * len(pairs)) and len(train) + len(val) == len(pairs)
    assert not {p.index for p in train} & {p.index for p in val}
    assert [p.index for p in val] == [p.index for p in again_val]
    assert [p.index for p in train] == [p.index for p in again_train]
    assert [p.index for p in val] != [p.index for p in other_val]
    with pytest.raises(ValueError, match="val_fraction"):
        split_pairs(pairs, val_fraction=1.0)


def test_pair_example_masks_the_prompt():
    ex = pair_example([5, 6, 7], [8, 9], [10])
    assert ex.chosen.input_ids == (5, 6, 7, 8) and ex.chosen.targets == (IGNORE_INDEX, IGNORE_INDEX, 8, 9)
    assert ex.rejected.input_ids == (5, 6, 7) and ex.rejected.targets == (IGNORE_INDEX, IGNORE_INDEX, 10)
    with pytest.raises(ValueError, match="non-empty"):
        pair_example([5], [], [1])


@pytest.fixture(scope="module")
def smollm2_tokenizer(smollm2_file):
    from quant.load import load_gguf

    return load_gguf(smollm2_file, n_layer=1)[1]


def test_tokenize_pair_renders_the_chat_template(smollm2_tokenizer, hh):
    tok = smollm2_tokenizer
    _, (pairs, _) = hh
    pair = next(p for p in pairs if len(p.prompt) >= 3)
    ex = tokenize_pair(tok, pair)
    prompt_text = tok.apply_chat_template(list(pair.prompt), add_generation_prompt=True, tokenize=False)
    n_prompt = len(tok.encode(prompt_text))
    assert prompt_text.endswith("<|im_start|>assistant\n")
    for side, reply in ((ex.chosen, pair.chosen), (ex.rejected, pair.rejected)):
        answer = [t for t in side.targets if t != IGNORE_INDEX]
        assert tok.decode(answer) == reply + "<|im_end|>", f"record {pair.index}: targets are not the reply"
        assert tok.decode(list(side.input_ids[:n_prompt])) == prompt_text
        assert side.targets[: n_prompt - 1] == (IGNORE_INDEX,) * (n_prompt - 1)
    assert ex.chosen.input_ids[:n_prompt] == ex.rejected.input_ids[:n_prompt]


def test_seeded_batches_cover_each_epoch_once():
    from itertools import islice

    from rl.preferences import seeded_batches

    items = list(range(10))
    stream = list(islice(seeded_batches(items, 4, seed=3), 5))  # 20 items: two whole epochs
    flat = [i for b in stream for i in b]
    assert all(len(b) == 4 for b in stream)
    assert sorted(flat[:10]) == items and sorted(flat[10:]) == items and flat[:10] != flat[10:]
    assert stream == list(islice(seeded_batches(items, 4, seed=3), 5))
    assert stream != list(islice(seeded_batches(items, 4, seed=4), 5))
    with pytest.raises(ValueError, match="batch_size"):
        next(seeded_batches(items, 0, seed=0))


def test_a_pair_gives_back_its_prompt_ids():
    pair = pair_example([5, 6, 7], [8, 9], [10])
    assert pair.prompt_ids == [5, 6, 7]
    assert pair.chosen.input_ids[len(pair.prompt_ids) :] == (8,)  # the reply's first token follows the prompt
