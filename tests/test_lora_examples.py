"""Fine-tuning examples: the prompt is masked, exactly the completion and its end token are targets,
batches are right-padded with -100 targets, the split and the stream are seeded and resumable, and
ranks slice a global batch the way one process's micro-steps do. A hand-made character tokenizer gives
hand-worked ids; SmolLM2's tokenizer and chat template give the real ones."""

import pytest
import torch

from gpt.model import IGNORE_INDEX
from lora.examples import (
    Example,
    ExampleStream,
    chat_examples,
    chat_prompt,
    check_examples,
    collate,
    end_text,
    make_example,
    rank_micro_batches,
    split,
)


class CharTokenizer:
    """ids = character codes, with ``<END>`` as id 0 (its eos) and a one-line chat template."""

    eos_id = 0

    def encode(self, text):
        parts = text.split("<END>")
        ids = []
        for i, part in enumerate(parts):
            if i:
                ids.append(0)
            ids += [ord(c) for c in part]
        return ids

    def decode(self, ids):
        return "".join("<END>" if i == 0 else chr(i) for i in ids)

    def apply_chat_template(self, messages, add_generation_prompt=True, tokenize=False):
        text = "".join(f"{m['role'][0]}:{m['content']}|" for m in messages)
        return text + ("a:" if add_generation_prompt else "")


def test_hand_worked_example():
    tok = CharTokenizer()
    assert chat_prompt(tok, "hi") == "u:hi|a:"
    assert end_text(tok) == "<END>"
    e = make_example(tok, "ab", "cd")  # ids a b c d <END>
    a, b, c, d = (ord(ch) for ch in "abcd")
    assert e.input_ids == (a, b, c, d)
    assert e.targets == (IGNORE_INDEX, c, d, 0)  # b's target is the first completion token
    assert e.n_targets == 3


def test_only_the_completion_is_a_target(smollm2):
    _, tok = smollm2
    question, answer = "What is 2 + 3?", "2 + 3 = 5.\n#### 5"
    prompt = chat_prompt(tok, question)
    assert prompt.endswith("<|im_start|>assistant\n")
    e = make_example(tok, prompt, answer)
    n_prompt = len(tok.encode(prompt))
    targets = torch.tensor(e.targets)
    assert (targets[: n_prompt - 1] == IGNORE_INDEX).all()
    assert (targets[n_prompt - 1 :] != IGNORE_INDEX).all()  # the mask covers exactly the prompt
    kept = [t for t in e.targets if t != IGNORE_INDEX]
    assert tok.decode(kept) == answer + "<|im_end|>"  # the completion and its end token, nothing else
    assert kept[-1] == tok.eos_id
    # the input is the whole conversation minus its last token, and it starts with the prompt's ids
    assert tok.decode([*e.input_ids, kept[-1]]) == prompt + answer + "<|im_end|>"
    assert list(e.input_ids[:n_prompt]) == tok.encode(prompt)


def test_chat_examples_drop_long_ones(smollm2):
    _, tok = smollm2
    pairs = [("short?", "yes"), ("long? " * 200, "no"), ("mid?", "maybe " * 5)]
    examples, dropped = chat_examples(tok, pairs, max_len=64)
    assert dropped == 1 and len(examples) == 2
    assert all(len(e.input_ids) <= 64 for e in examples)
    with pytest.raises(ValueError, match="max_len"):
        chat_examples(tok, pairs, max_len=1)


def test_collate_right_pads():
    e1, e2 = Example((5, 6, 7), (-100, 7, 8)), Example((9,), (3,))
    x, y = collate([e1, e2], pad_id=1)
    assert x.tolist() == [[5, 6, 7], [9, 1, 1]]
    assert y.tolist() == [[-100, 7, 8], [3, -100, -100]]
    assert x.dtype == y.dtype == torch.long


def test_bad_examples():
    tok = CharTokenizer()
    with pytest.raises(ValueError, match="completion is empty"):
        make_example(tok, "ab", "")
    with pytest.raises(ValueError, match="equally long"):
        Example((1, 2), (3,))
    with pytest.raises(ValueError, match="at least one example"):
        collate([], 0)
    with pytest.raises(ValueError, match="no eos_id"):
        end_text(object())
    good = Example((1, 2), (-100, 3))
    check_examples([good], "train", vocab_size=4, block_size=2)
    with pytest.raises(ValueError, match="train is empty"):
        check_examples([], "train", 4, 2)
    with pytest.raises(ValueError, match=r"train\[0\] has ids outside \[0, 3\)"):
        check_examples([good], "train", vocab_size=3, block_size=2)
    with pytest.raises(ValueError, match="block_size=1"):
        check_examples([good], "train", vocab_size=4, block_size=1)
    with pytest.raises(ValueError, match="at least one target"):
        check_examples([Example((1,), (-100,))], "val", 4, 2)
    with pytest.raises(TypeError, match=r"lora\.examples"):
        check_examples([(1, 2)], "val", 4, 2)


def test_split_is_seeded_and_disjoint():
    items = list(range(20))
    train, val = split(items, 5, seed=0)
    assert len(val) == 5 and sorted(train + val) == items
    assert split(items, 5, seed=0) == (train, val)
    assert split(items, 5, seed=1) != (train, val)
    with pytest.raises(ValueError, match="n_val"):
        split(items, 20, seed=0)


def test_stream_covers_each_epoch_and_resumes():
    stream = ExampleStream(n=5, batch_size=2, seed=3)
    batches = [stream.next_batch() for _ in range(5)]  # 10 indices: two epochs of 5
    flat = [i for b in batches for i in b]
    assert sorted(flat[:5]) == sorted(flat[5:]) == list(range(5))
    assert flat[:5] != flat[5:]  # reshuffled per epoch
    again = ExampleStream(5, 2, seed=3)
    again.next_batch()
    saved = again.state_dict()
    resumed = ExampleStream(5, 2, seed=3)
    resumed.load_state_dict(saved)
    assert [resumed.next_batch() for _ in range(4)] == batches[1:]
    with pytest.raises(ValueError, match="outside"):
        resumed.load_state_dict({"epoch": 0, "pos": 5})


def test_rank_slices_equal_one_process_micro_steps():
    batch = list(range(8))
    one = rank_micro_batches(batch, 0, 1, 4)
    assert one == [[0, 1], [2, 3], [4, 5], [6, 7]]
    two = rank_micro_batches(batch, 0, 2, 2) + rank_micro_batches(batch, 1, 2, 2)
    assert two == one
    with pytest.raises(ValueError, match="multiple of world_size"):
        rank_micro_batches(batch, 0, 3, 1)
