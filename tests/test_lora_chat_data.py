"""lora.chat_data: Alpaca and GSM8K records -> conversations (hand-worked), every stage's count against a
count made here from the raw files (status, exact duplicates, token lengths), near-duplicates on a
hand-made set, a seeded disjoint split, the mixture's counts by hand, and one ValueError naming the record
for each kind of bad conversation."""

import json

import pytest

from gpt.data.dedup import MinHashConfig, jaccard, shingles
from gpt.data.gsm8k import final_answer, load_gsm8k
from lora.chat_data import (
    MIXTURE,
    ChatDataConfig,
    alpaca_conversation,
    build_chat_data,
    clean_conversations,
    conversation_text,
    mix_conversations,
    read_source,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


@pytest.fixture(scope="module")
def tok(data_file):
    """SmolLM2's tokenizer alone (quant.tokenizer is checked against transformers in its own tests)."""
    from quant.gguf import read_gguf
    from quant.tokenizer import tokenizer_from_gguf

    return tokenizer_from_gguf(read_gguf(data_file("smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")).metadata)


def test_alpaca_record_hand_worked():
    record = {"instruction": "Edit the sentence. ", "input": " I seen it.", "output": "I saw it.\n\n\n"}
    assert alpaca_conversation(record, "x[0]") == [
        user("Edit the sentence.\n\nI seen it."),
        assistant("I saw it."),
    ]
    record = {"instruction": "Name a prime.", "input": "", "output": "7"}
    assert alpaca_conversation(record, "x[0]") == [user("Name a prime."), assistant("7")]
    with pytest.raises(ValueError, match=r"x\[3\]: output is a NoneType"):
        alpaca_conversation({"instruction": "a", "input": "", "output": None}, "x[3]")
    with pytest.raises(ValueError, match=r"x\[4\].*'output'"):
        alpaca_conversation({"instruction": "a", "input": ""}, "x[4]")


LONG = (
    "Packing several short conversations into one row of the context saves the compute that padding "
    "would spend, as long as no token can attend to another conversation and every position restarts."
)


def test_stages_hand_worked():
    convs = [
        [user("q0"), assistant(LONG)],
        [user("q1"), assistant("")],  # too short
        [user("q0"), assistant(LONG)],  # exact duplicate of 0
        [user("q0"), assistant(LONG.replace("every position", "every index"))],  # near duplicate of 0
        [{"role": "system", "content": "Be brief."}, user("q4"), assistant("x" * 400)],  # too long (chars)
        [user("q5"), assistant("Five.")],
        [user("q6"), assistant("Six."), user("And?"), assistant("Seven.")],
    ]
    cfg = ChatDataConfig(max_tokens=None, max_chars=300, val_fraction=0.0)
    data = clean_conversations("mine", convs, cfg=cfg)
    r = data.report
    assert (r.read, r.too_short, r.exact_duplicates, r.near_duplicates, r.too_long) == (7, 1, 1, 1, 1)
    assert (r.train, r.val) == (3, 0) and r.dropped == 4
    assert sorted(map(str, data.train)) == sorted(str(convs[i]) for i in (0, 5, 6))
    # the near duplicate: 26 of 30 word 5-grams shared (Jaccard 0.87), caught at 0.8 and not at 0.99
    assert jaccard(*(shingles(conversation_text(convs[i])) for i in (0, 3))) == pytest.approx(26 / 30)
    loose = clean_conversations(
        "mine", convs, cfg=ChatDataConfig(max_tokens=None, minhash=MinHashConfig(threshold=0.99))
    )
    assert loose.report.near_duplicates == 0 and loose.report.exact_duplicates == 1


@pytest.mark.parametrize(
    "bad, message",
    [
        ([user("hi")], r"mine\[1\] has no assistant turn"),
        ([user("hi"), {"role": "bot", "content": "yo"}], r"mine\[1\]: .*role 'bot'"),
        ([user("hi"), assistant(7)], r"mine\[1\]: .*content of type int"),
        ([user("hi"), "yo"], r"mine\[1\]: .*must be a dict"),
        ([], r"mine\[1\]: messages is empty"),
    ],
)
def test_bad_conversation_is_one_value_error_naming_the_record(bad, message):
    with pytest.raises(ValueError, match=message):
        clean_conversations("mine", [[user("a"), assistant("b")], bad], cfg=ChatDataConfig(max_tokens=None))


def test_bad_config():
    with pytest.raises(ValueError, match="pass the tokenizer"):
        clean_conversations("mine", [[user("a"), assistant("b")]])  # max_tokens needs a tokenizer
    with pytest.raises(ValueError, match="val_fraction"):
        ChatDataConfig(val_fraction=1.0)
    with pytest.raises(ValueError, match="unknown source"):
        read_source("alpaca")


def test_alpaca_libre_counts_equal_the_raw_files(data_file):
    rows = []
    for name in ("alpaca_libre_tasks_v1.jsonl", "alpaca_libre_tasks_v3.jsonl"):
        lines = data_file("alpaca_libre", name).read_text("utf-8").splitlines()
        rows += [json.loads(line) for line in lines if line.strip()]
    ok = [r for r in rows if r["status"] == "ok"]
    replied = [r for r in ok if r["output"].strip()]
    fields = {tuple(r[k].strip() for k in ("instruction", "input", "output")) for r in replied}
    data = build_chat_data("alpaca_libre", cfg=ChatDataConfig(max_tokens=None))
    r = data.report
    assert (r.read, r.not_ok, r.too_short) == (len(rows), len(rows) - len(ok), len(ok) - len(replied))
    assert r.exact_duplicates == len(replied) - len(fields)
    kept = data.train + data.val
    assert len(kept) == r.read - r.dropped
    assert len({conversation_text(c) for c in kept}) == len(kept)  # no exact duplicate is left
    assert not {conversation_text(c) for c in data.train} & {conversation_text(c) for c in data.val}
    assert r.val == round(0.05 * len(kept))


def test_code_alpaca_and_gsm8k_records(data_file):
    records = json.loads(data_file("code_alpaca_2k", "code_alpaca_2k.json").read_text("utf-8"))
    convs, not_ok = read_source("code_alpaca_2k")
    assert (len(convs), not_ok) == (len(records), 0)
    assert convs[5] == alpaca_conversation(records[5], "")
    problems = load_gsm8k("train", limit=50)
    convs, _ = read_source("gsm8k", limit=50)
    for p, (q, a) in zip(problems, convs, strict=True):
        assert q == user(p.question.strip()) and a["role"] == "assistant"
        assert final_answer(a["content"]) == p.final and a["content"].endswith(
            f"#### {p.answer.split('#### ')[-1]}"
        )
        assert "<<" not in a["content"]  # calculator annotations removed


def test_token_length_filter_counts_rendered_tokens(tok):
    cfg = ChatDataConfig(max_tokens=None, limit=60, val_fraction=0.0)
    unfiltered = clean_conversations("gsm8k", read_source("gsm8k", limit=60)[0], cfg=cfg).train
    lengths = [len(tok.encode(tok.apply_chat_template(c, add_generation_prompt=False))) for c in unfiltered]
    cut = sorted(lengths)[len(lengths) // 2]
    data = build_chat_data("gsm8k", tok, ChatDataConfig(max_tokens=cut, limit=60, val_fraction=0.0))
    assert data.report.too_long == sum(n > cut for n in lengths) > 0
    assert all(len(tok.apply_chat_template(c, False, tokenize=True)) <= cut for c in data.train)


def test_split_is_seeded():
    convs = [[user(f"q{i}"), assistant(f"answer number {i}")] for i in range(40)]
    cfg = lambda seed: ChatDataConfig(max_tokens=None, val_fraction=0.25, seed=seed)  # noqa: E731
    a, b, c = (clean_conversations("mine", convs, cfg=cfg(s)) for s in (0, 0, 1))
    assert a.val == b.val and a.train == b.train and a.val != c.val
    assert len(a.val) == 10 and sorted(map(str, a.train + a.val)) == sorted(map(str, convs))


def test_mixture_counts_by_hand():
    sets = {
        "a": [[user(f"a{i}"), assistant("x")] for i in range(10)],
        "b": [[user(f"b{i}"), assistant("y")] for i in range(8)],
    }
    mixed, counts = mix_conversations(sets, {"a": 2.0, "b": 0.25}, seed=0)
    assert counts == {"a": 20, "b": 2} and len(mixed) == 22
    assert sum(c[0]["content"].startswith("a") for c in mixed) == 20
    assert all(mixed.count(c) == 2 for c in sets["a"])  # two epochs of a: each conversation twice
    assert (
        mix_conversations(sets, {"a": 2.0, "b": 0.25}, seed=0)[0]
        == mixed
        != mix_conversations(sets, {"a": 2.0, "b": 0.25}, seed=1)[0]
    )
    gsm = {"gsm8k": [[user(f"g{i}"), assistant("z")] for i in range(8)], **sets}
    assert mix_conversations(gsm)[1] == {
        "gsm8k": round(8 * MIXTURE["gsm8k"]),
        "a": 10,
        "b": 8,
    }  # unlisted sources: 1 epoch
    with pytest.raises(ValueError, match="unknown sources"):
        mix_conversations(sets, {"c": 1.0})
