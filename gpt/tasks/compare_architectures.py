"""Decoder-only vs encoder-only vs encoder-decoder on the same data, tokens, width and step budget.

Every task is framed as "source -> target" over Multi30k sentences, so that the three architectures see
exactly the same examples and are scored on exactly the same target tokens:

- ``lm``: continue a sentence (source = its first half, target = the second half): next-token LM;
- ``fill``: a sentence with one word replaced by ``<mask>`` -> that word (a fill-in / cloze task);
- ``translate``: an English sentence -> its German translation (Multi30k En->De).

How each architecture reads a pair (targets end with EOS):

- decoder-only (:class:`gpt.model.GPT`): ``source <sep> target``, causal, loss on the target positions
  only; decoding continues the text after ``<sep>`` one token at a time;
- encoder-only (:class:`gpt.encoders.mlm.BertMLM`): ``source <sep> <mask> x M``, bidirectional, every
  target token predicted at once from its ``<mask>`` slot (non-autoregressive: the slots cannot see
  each other's answers), decoding reads the slots up to the first EOS;
- encoder-decoder (:class:`gpt.encoders.t5.T5`): the encoder reads the source, the decoder writes the target.

Same width and depth (the encoder-decoder splits its layers between the two stacks), same batch, same
optimizer and number of steps. Reported per (task, architecture): held-out loss per target token, exact
match of the decoded target, BLEU (translation), parameters, training time. References: Raffel et al.
2020 (T5), section 3.2, compares the same three families on one budget; Wang et al. 2022, "What Language
Model Architecture and Pretraining Objective Work Best for Zero-Shot Generalization?".
"""

import random
import time
from dataclasses import dataclass

import torch

from gpt.encoders.bert import BertConfig
from gpt.encoders.mlm import BertMLM
from gpt.encoders.t5 import T5, T5Config, shift_right
from gpt.encoders.t5_decode import greedy_decode
from gpt.model import GPT, IGNORE_INDEX, GPTConfig
from gpt.tasks.translation import Seq2SeqVocab, load_pairs, pad_batch

TASKS = ("lm", "fill", "translate")
ARCHS = ("decoder-only", "encoder-only", "encoder-decoder")


@dataclass
class CompareConfig:
    n_embd: int = 128
    n_head: int = 4
    n_layer: int = 4  # encoder-decoder: n_layer // 2 in each stack
    steps: int = 300
    batch_size: int = 32
    lr: float = 2e-3
    vocab_size: int = 2000  # joint BPE with the 4 specials
    max_tgt: int = 24  # target tokens (with EOS); the encoder-only model gets this many <mask> slots
    max_src: int = 32
    train_sentences: int | None = 10_000
    eval_sentences: int = 100
    seed: int = 0

    def __post_init__(self):
        if self.n_layer < 2 or self.n_layer % 2:
            raise ValueError(
                f"n_layer must be even and >= 2 (the encoder-decoder splits it), got {self.n_layer}"
            )
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}")


def make_examples(task: str, en: list[str], de: list[str], vocab: Seq2SeqVocab, rng: random.Random):
    """(source ids, target ids ending in EOS) pairs for ``task``, cut to fit."""
    if task not in TASKS:
        raise ValueError(f"task={task!r}; choose one of {TASKS}")
    out = []
    for e, d in zip(en, de, strict=True):
        words = e.split()
        if task == "translate":
            src, tgt = vocab.encode(e), vocab.encode(d)
        elif task == "lm":
            if len(words) < 4:
                continue
            cut = len(words) // 2
            src = vocab.encode(" ".join(words[:cut]), eos=False)
            tgt = vocab.encode(" " + " ".join(words[cut:]))
        else:
            choices = [i for i, w in enumerate(words) if w.isalpha() and len(w) >= 3]
            if not choices:
                continue
            i = rng.choice(choices)
            left = vocab.encode(" ".join(words[:i]), eos=False)
            right = vocab.encode(" " + " ".join(words[i + 1 :]), eos=False) if i + 1 < len(words) else []
            src = [*left, vocab.mask_id, *right, vocab.eos_id]
            tgt = vocab.encode((" " if i else "") + words[i])
        out.append((src, tgt))  # cut to max_src / max_tgt where batched
    return out


def build(arch: str, cfg: CompareConfig, vocab_size: int):
    C, nh, L = cfg.n_embd, cfg.n_head, cfg.n_layer
    block = cfg.max_src + 1 + cfg.max_tgt
    if arch == "decoder-only":
        return GPT(GPTConfig(vocab_size=vocab_size, block_size=block, n_layer=L, n_head=nh, n_embd=C))
    if arch == "encoder-only":
        bert = BertConfig(
            vocab_size=vocab_size, block_size=block, n_layer=L, n_head=nh, n_embd=C, dropout=0.0
        )
        return BertMLM(bert)
    if arch == "encoder-decoder":
        t5 = T5Config(
            vocab_size=vocab_size,
            n_embd=C,
            n_head=nh,
            head_dim=C // nh,
            ffn_hidden=4 * C,
            n_layer=L // 2,
            dropout=0.0,
        )
        return T5(t5)
    raise ValueError(f"arch={arch!r}; choose one of {ARCHS}")


def batch_loss(arch: str, model, batch, vocab: Seq2SeqVocab, cfg: CompareConfig):
    """Mean cross-entropy over the target tokens (EOS included) of a list of (src, tgt) pairs."""
    src_rows = [s[: cfg.max_src] for s, _ in batch]
    tgt_rows = [t[: cfg.max_tgt] for _, t in batch]
    if arch == "encoder-decoder":
        src, src_mask = pad_batch(src_rows, vocab.pad_id)
        tgt, tgt_mask = pad_batch(tgt_rows, vocab.pad_id)
        targets = tgt.masked_fill(tgt_mask == 0, IGNORE_INDEX)
        return model(src, shift_right(targets, vocab.pad_id, vocab.pad_id), src_mask, targets)[1]
    if arch == "decoder-only":
        rows = [[*s, vocab.sep_id, *t] for s, t in zip(src_rows, tgt_rows, strict=True)]
        seq, mask = pad_batch(rows, vocab.pad_id)
        labels = seq.masked_fill(mask == 0, IGNORE_INDEX)
        for i, s in enumerate(src_rows):
            labels[i, : len(s) + 1] = IGNORE_INDEX  # the source and <sep> are given, not predicted
        return model(seq[:, :-1], labels[:, 1:])[1]
    rows = [[*s, vocab.sep_id, *[vocab.mask_id] * cfg.max_tgt] for s in src_rows]
    seq, mask = pad_batch(rows, vocab.pad_id)
    labels = torch.full_like(seq, IGNORE_INDEX)
    for i, (s, t) in enumerate(zip(src_rows, tgt_rows, strict=True)):
        labels[i, len(s) + 1 : len(s) + 1 + len(t)] = torch.tensor(t)
    return model(seq, labels, attention_mask=mask)[1]


@torch.no_grad()
def decode(
    arch: str, model, sources: list[list[int]], vocab: Seq2SeqVocab, cfg: CompareConfig
) -> list[list[int]]:
    """Greedy target ids (without EOS) for each source."""
    sources = [s[: cfg.max_src] for s in sources]
    if arch == "encoder-decoder":
        src, mask = pad_batch(sources, vocab.pad_id)
        return [r[1:] for r in greedy_decode(model, src, mask, cfg.max_tgt).tolist()]
    if arch == "encoder-only":
        rows = [[*s, vocab.sep_id, *[vocab.mask_id] * cfg.max_tgt] for s in sources]
        seq, mask = pad_batch(rows, vocab.pad_id)
        pred = model(seq, attention_mask=mask)[0].argmax(-1)
        return [pred[i, len(s) + 1 : len(s) + 1 + cfg.max_tgt].tolist() for i, s in enumerate(sources)]
    out = []
    for s in sources:  # prompts differ in length and GPT takes no padding mask: one at a time
        prompt = torch.tensor([[*s, vocab.sep_id]])
        new = model.generate(prompt, cfg.max_tgt, temperature=0.0, eos_id=vocab.eos_id)[0, prompt.size(1) :]
        out.append(new.tolist())
    return out


def run_task(task: str, cfg: CompareConfig, vocab: Seq2SeqVocab | None = None, archs=ARCHS) -> dict:
    """Train each architecture on ``task`` for ``cfg.steps`` and evaluate on held-out sentences."""
    import sacrebleu  # reference scorer, imported where it is used

    rng = random.Random(cfg.seed)
    en, de = load_pairs("train", cfg.train_sentences)
    vocab = vocab or Seq2SeqVocab.train(en + de, cfg.vocab_size)
    train = make_examples(task, en, de, vocab, rng)
    test_en, test_de = load_pairs("val", cfg.eval_sentences)
    test = make_examples(task, test_en, test_de, vocab, random.Random(cfg.seed + 1))
    results = {}
    for arch in archs:
        torch.manual_seed(cfg.seed)
        model = build(arch, cfg, vocab.vocab_size)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
        order = random.Random(cfg.seed)
        curve, t0 = [], time.time()
        model.train()
        for step in range(cfg.steps):
            for g in opt.param_groups:  # short warmup, then linear decay to 10%
                g["lr"] = cfg.lr * min(1.0, (step + 1) / 20) * (1 - 0.9 * step / cfg.steps)
            loss = batch_loss(arch, model, order.sample(train, cfg.batch_size), vocab, cfg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            curve.append(loss.item())
        train_s = time.time() - t0
        model.eval()
        with torch.no_grad():
            eval_loss = sum(
                batch_loss(arch, model, test[i : i + 50], vocab, cfg).item() * len(test[i : i + 50])
                for i in range(0, len(test), 50)
            ) / len(test)
        hyps = [vocab.decode(ids) for ids in decode(arch, model, [s for s, _ in test], vocab, cfg)]
        refs = [vocab.decode(t) for _, t in test]
        results[arch] = dict(
            eval_loss=eval_loss,
            exact_match=sum(h.strip() == r.strip() for h, r in zip(hyps, refs, strict=True)) / len(test),
            bleu=sacrebleu.corpus_bleu(hyps, [refs]).score,
            params=sum(p.numel() for p in model.parameters()),
            train_s=train_s,
            curve=curve,
            examples=list(zip([vocab.decode(s) for s, _ in test[:3]], hyps[:3], refs[:3], strict=True)),
        )
    return results
