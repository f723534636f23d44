"""lora.packing: first-fit rows and padding counts by hand; the block-diagonal mask and position resets by
hand; the packed loss equals the sum of each conversation's loss alone (one row each, plain causal
forward) within 1e-5 in fp32 (relative for the sum and for token losses above 1), on tiny random GPTs
(RoPE, learned, sinusoidal positions) and on SmolLM2 cut to 2 layers with real conversations; without the
mask (or, but under RoPE, the resets) it does not. The gradients of the packed summed loss equal the
sum of the conversations' gradients alone within 1e-5."""

import random

import pytest
import torch
import torch.nn.functional as F

from gpt import GPT, GPTConfig
from gpt.model import IGNORE_INDEX
from lora.chat_data import read_source
from lora.chat_mask import conversation_examples
from lora.examples import Example
from lora.packing import first_fit, pack, packed_loss, packed_token_losses, padding_counts

pytestmark = pytest.mark.usefixtures("one_thread")

VOCAB = 61


def random_examples(n, seed=0, lo=3, hi=20) -> list[Example]:
    """Sequences of lo..hi tokens whose first targets are masked (a prompt) and the rest are not."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        ids = [rng.randrange(1, VOCAB) for _ in range(rng.randint(lo + 1, hi + 1))]
        prompt = rng.randint(1, len(ids) - 2)
        out.append(Example(tuple(ids[:-1]), tuple([IGNORE_INDEX] * (prompt - 1) + ids[prompt:])))
    return out


def tiny_gpt(pos: str, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    shape = dict(vocab_size=VOCAB, block_size=64, n_layer=2, n_head=4, n_embd=32, ffn_hidden=48)
    config = (
        GPTConfig.llama(**shape, n_kv_head=2, rope_theta=100.0)
        if pos == "rope"
        else GPTConfig(**shape, pos=pos)
    )
    return GPT(config).eval()


@torch.no_grad()
def unpacked_token_losses(model, e: Example) -> torch.Tensor:
    """(n,) the example's token losses alone in a row, plain causal attention (-100 targets give 0)."""
    logits, _ = model(torch.tensor([e.input_ids]))
    return F.cross_entropy(
        logits[0].float(), torch.tensor(e.targets), ignore_index=IGNORE_INDEX, reduction="none"
    )


def test_first_fit_and_padding_by_hand():
    rows = first_fit([7, 5, 4, 1], T=8)  # 7 -> row 0; 5 -> row 1; 4 -> row 2 (row 1 has 3 free); 1 -> row 0
    assert rows == [[0, 3], [1], [2]]
    counts = padding_counts([7, 5, 4, 1], T=8)
    assert (counts.tokens, counts.packed_rows, counts.packed_padding, counts.unpacked_padding) == (
        17,
        3,
        7,
        15,
    )
    assert counts.saved == pytest.approx(1 - 7 / 15)
    assert first_fit([2, 3, 3, 2], T=5) == [[1, 0], [2, 3]]  # ties keep input order
    with pytest.raises(ValueError, match="item 1 has length 9"):
        first_fit([2, 9], T=8)


def test_pack_by_hand():
    a = Example((11, 12, 13), (IGNORE_INDEX, 13, 14))
    b = Example((21, 22), (22, 23))
    batch = pack([a, b], T=6, pad_id=0, rows=[[0, 1]])
    assert batch.idx.tolist() == [[11, 12, 13, 21, 22, 0]]
    assert batch.targets.tolist() == [[IGNORE_INDEX, 13, 14, 22, 23, IGNORE_INDEX]]
    assert batch.positions.tolist() == [[0, 1, 2, 0, 1, 0]]
    assert batch.segments.tolist() == [[0, 0, 0, 1, 1, -1]]
    expected = [
        [1, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0],
        [0, 0, 0, 1, 0, 0],  # b's first token sees only itself
        [0, 0, 0, 1, 1, 0],
        [0, 0, 0, 0, 0, 1],  # padding sees only itself
    ]
    assert batch.attn_mask.shape == (1, 1, 6, 6) and batch.attn_mask[0, 0].int().tolist() == expected
    with pytest.raises(ValueError, match="more than T=4"):
        pack([a, b], T=4, pad_id=0, rows=[[0, 1]])


def assert_packed_equals_unpacked(model, examples, T, tol=1e-5) -> dict:
    """Packed vs alone: each token loss within tol (absolute, or relative for losses above 1), the
    summed loss within tol relative, the mean loss within tol absolute. Returns the measured diffs."""
    batch = pack(examples, T, pad_id=0)
    with torch.no_grad():
        packed = packed_token_losses(model, batch)  # (B, T)
        total = packed_loss(model, batch, reduction="sum").item()
        mean = packed_loss(model, batch, reduction="mean").item()
    worst, unpacked_sum = 0.0, 0.0
    for b, row in enumerate(batch.rows):
        start = 0
        for i in row:
            alone = unpacked_token_losses(model, examples[i])
            n = len(alone)
            torch.testing.assert_close(packed[b, start : start + n], alone, rtol=tol, atol=tol)
            worst = max(worst, (packed[b, start : start + n] - alone).abs().max().item())
            unpacked_sum += alone.double().sum().item()
            start += n
    n_targets = sum(e.n_targets for e in examples)
    assert abs(total - unpacked_sum) <= tol * abs(unpacked_sum)
    assert abs(mean - unpacked_sum / n_targets) <= tol
    assert len(batch.rows) < len(examples)  # something was packed
    return dict(
        token=worst,
        sum=abs(total - unpacked_sum),
        total=unpacked_sum,
        mean=abs(mean - unpacked_sum / n_targets),
    )


@pytest.mark.parametrize("pos", ["rope", "learned", "sinusoidal"])
def test_packed_loss_equals_the_sum_of_unpacked_losses(pos):
    assert_packed_equals_unpacked(tiny_gpt(pos), random_examples(12), T=48)


@pytest.mark.parametrize("pos", ["rope", "learned"])
def test_without_the_mask_or_the_resets_the_losses_differ(pos):
    """The equality is sharp: plain causal attention across the row changes the losses, and so do
    positions that run on across the row, except under RoPE, which sees only distances."""
    model, examples = tiny_gpt(pos), random_examples(12)
    batch = pack(examples, T=48, pad_id=0)
    B, T = batch.idx.shape
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool)).expand(B, 1, T, T)
    running = torch.arange(T).expand(B, T)
    with torch.no_grad():
        right = packed_token_losses(model, batch)
        leaky = packed_token_losses(model, type(batch)(**{**vars(batch), "attn_mask": causal}))
        shifted = packed_token_losses(model, type(batch)(**{**vars(batch), "positions": running}))
    assert (leaky - right).abs().max() > 1e-2
    if pos == "rope":
        assert (shifted - right).abs().max() <= 1e-5
    else:
        assert (shifted - right).abs().max() > 1e-2


def test_alibi_is_refused():
    model = tiny_gpt("alibi")
    with pytest.raises(ValueError, match="ALiBi"):
        packed_loss(model, pack(random_examples(2), T=48, pad_id=0))


def test_packing_smollm2_two_layers(smollm2_file):
    from quant.load import load_gguf

    model, tok = load_gguf(smollm2_file, n_layer=2)
    conversations = [c for s in ("alpaca_libre", "gsm8k") for c in read_source(s, limit=3)[0]]
    examples, dropped = conversation_examples(tok, conversations, max_len=512)
    assert dropped == 0 and len(examples) == len(conversations) >= 4
    assert_packed_equals_unpacked(model, examples, T=max(len(e.input_ids) for e in examples) * 2)


def test_padding_counts_on_real_lengths(smollm2_file):
    """On real conversations, the counts obey their definitions."""
    from quant.gguf import read_gguf
    from quant.tokenizer import tokenizer_from_gguf

    tok = tokenizer_from_gguf(read_gguf(smollm2_file).metadata)
    examples, _ = conversation_examples(tok, read_source("alpaca_libre", limit=60)[0], max_len=256)
    lengths = [len(e.input_ids) for e in examples]
    counts = padding_counts(lengths, T=256)
    assert counts.tokens == sum(lengths)
    assert counts.packed_padding == counts.packed_rows * 256 - counts.tokens
    assert counts.unpacked_padding == len(lengths) * 256 - counts.tokens
    assert -(-counts.tokens // 256) <= counts.packed_rows < len(lengths)  # no fewer rows than tokens / T
    assert 0 < counts.saved < 1


@pytest.mark.parametrize("pos", ["rope", "learned"])
def test_packed_gradients_equal_the_sum_of_unpacked_gradients(pos):
    """Training on packed rows follows the same gradient as training on each conversation alone."""
    examples = random_examples(10, seed=3)
    packed_model, alone_model = tiny_gpt(pos), tiny_gpt(pos)
    packed_loss(packed_model, pack(examples, T=48, pad_id=0), reduction="sum").backward()
    for e in examples:
        logits, _ = alone_model(torch.tensor([e.input_ids]))
        F.cross_entropy(
            logits[0], torch.tensor(e.targets), ignore_index=IGNORE_INDEX, reduction="sum"
        ).backward()
    for (name, p), q in zip(packed_model.named_parameters(), alone_model.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-5, msg=name)
