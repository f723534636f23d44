"""Multi30k English -> German with a small T5 trained from scratch, scored with sacreBLEU.

What it teaches: the whole sequence-to-sequence recipe in one file. A joint byte-level BPE
(``bpe.RegexTokenizer``) is trained on the English and German training sentences, four special tokens
are put in front of it (:class:`Seq2SeqVocab`: pad = 0 and EOS = 1 as T5 expects), batches of
(source, target) pairs are padded, the model learns with teacher forcing and label smoothing (Vaswani et
al. 2017, section 5.4) for a fixed **wall-clock budget**, and the 1,000 test_2016_flickr sentences are
translated greedily (or with beam search) and scored with sacreBLEU (Post 2018; default 13a tokenizer,
detokenized output against the raw references).

``python -m gpt.tasks.translation --budget-minutes 12`` runs it; ``--size micro --max-steps 5`` is the
smoke test; sizes are ``gpt.sizes.SIZES``, one shape for the encoder and one for the decoder. The data
are Multi30k task 1 (Elliott et al. 2016) under ``$LLM_COURSE_DATA/multi30k``.
Reference point: published small-transformer systems reach about 35 BLEU on test_2016_flickr after hours
on a GPU (e.g. the text-only systems in Elliott et al. 2017, "Findings of the Second Shared Task on
Multimodal Machine Translation"). Measured here: ``--size mini --budget-minutes 12 --threads 1`` on a shared
2-core CPU, 2,126 steps, 6.1 BLEU (greedy); notebook 3.3 says why the gap.
"""

import gzip
import json
import math
import os
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from bpe import RegexTokenizer
from gpt.data.paths import dataset_path
from gpt.encoders.t5 import T5, T5Config, shift_right
from gpt.encoders.t5_decode import beam_search, greedy_decode
from gpt.flags import parse_dataclass
from gpt.model import IGNORE_INDEX
from gpt.sizes import get_size

SPECIALS = ("<pad>", "</s>", "<mask>", "<sep>")  # ids 0, 1, 2, 3; BPE ids follow


def load_pairs(split: str, limit: int | None = None) -> tuple[list[str], list[str]]:
    """English and German sentences of ``split`` (train, val, test_2016_flickr), line-aligned."""
    sides = []
    for lang in ("en", "de"):
        with gzip.open(dataset_path("multi30k", f"{split}.{lang}.gz"), "rt", encoding="utf-8") as f:
            sides.append(f.read().splitlines()[:limit])
    en, de = sides
    assert len(en) == len(de), f"multi30k {split}: {len(en)} English vs {len(de)} German lines"
    return en, de


class Seq2SeqVocab:
    """A trained BPE with :data:`SPECIALS` in front: model id = BPE id + 4."""

    def __init__(self, bpe: RegexTokenizer):
        self.bpe = bpe
        self.pad_id, self.eos_id, self.mask_id, self.sep_id = range(len(SPECIALS))
        self.vocab_size = len(SPECIALS) + bpe.vocab_size

    @classmethod
    def train(cls, texts: list[str], vocab_size: int) -> "Seq2SeqVocab":
        """Joint BPE on ``texts`` (both languages) with ``vocab_size`` ids including the 4 specials."""
        bpe = RegexTokenizer("gpt4")
        bpe.train(texts, vocab_size - len(SPECIALS))
        return cls(bpe)

    def encode(self, text: str, eos: bool = True) -> list[int]:
        ids = [i + len(SPECIALS) for i in self.bpe.encode_ordinary(text)]
        return [*ids, self.eos_id] if eos else ids

    def decode(self, ids) -> str:
        """Text up to the first EOS; specials dropped."""
        out = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if i >= len(SPECIALS):
                out.append(i - len(SPECIALS))
        return self.bpe.decode(out)


def pad_batch(rows: list[list[int]], pad: int, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad rows to one length: (B, T) ids and (B, T) mask (1 = real token)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        mask[i, : len(r)] = 1
    return ids.to(device), mask.to(device)


@dataclass
class TranslationConfig:
    size: str = "mini"  # a gpt.sizes.SIZES name, for the encoder and the decoder each
    budget_minutes: float = 12.0  # wall-clock training budget; training stops at whichever comes first
    max_steps: int = 1_000_000
    vocab_size: int = 8000  # joint BPE, specials included
    batch_size: int = 64  # sentence pairs per step
    lr: float = 1e-3
    warmup_steps: int = 200
    label_smoothing: float = 0.1
    dropout: float = 0.1
    max_len: int = 64  # tokens per side; longer training pairs are cut
    train_sentences: int | None = None  # None: all 29,000
    eval_sentences: int | None = None  # None: all 1,000 test_2016_flickr sentences
    num_beams: int = 1  # 1: greedy
    device: str = "cpu"
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default (1 is faster on shared CPU cores)
    seed: int = 0
    out: str | None = None  # write the summary as JSON here

    def __post_init__(self):
        get_size(self.size)
        if self.budget_minutes <= 0 or self.max_steps < 1:
            raise ValueError(
                f"need budget_minutes > 0 and max_steps >= 1, got {self.budget_minutes}, {self.max_steps}"
            )


def build_model(cfg: TranslationConfig, vocab: Seq2SeqVocab) -> T5:
    size = get_size(cfg.size)
    config = T5Config(
        vocab_size=vocab.vocab_size,
        n_embd=size.n_embd,
        n_head=size.n_head,
        head_dim=size.head_dim,
        ffn_hidden=4 * size.n_embd,
        n_layer=size.n_layer,
        dropout=cfg.dropout,
        pad_id=vocab.pad_id,
        eos_id=vocab.eos_id,
        decoder_start_id=vocab.pad_id,
    )
    return T5(config)


def translate(
    model: T5, vocab: Seq2SeqVocab, sentences: list[str], num_beams=1, batch_size=100, device="cpu"
):
    """Translate ``sentences`` (sorted by length inside, returned in input order)."""
    model.eval()
    encoded = [vocab.encode(s) for s in sentences]
    order = sorted(range(len(sentences)), key=lambda i: len(encoded[i]))
    out = [""] * len(sentences)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        src, mask = pad_batch([encoded[i] for i in chunk], vocab.pad_id, device)
        n = min(128, int(1.5 * src.size(1)) + 10)
        if num_beams == 1:
            ids = greedy_decode(model, src, mask, max_new_tokens=n)
        else:
            ids = beam_search(model, src, mask, num_beams=num_beams, max_new_tokens=n)
        for i, row in zip(chunk, ids, strict=True):
            out[i] = vocab.decode(row[1:])  # drop the start token
    return out


def train(cfg: TranslationConfig, snapshot_fractions=()) -> tuple[T5, Seq2SeqVocab, dict]:
    """Train BPE and a T5 on Multi30k train for the budget; returns (model, vocab, training stats).

    With ``snapshot_fractions`` (each in (0, 1)), ``stats["snapshots"]`` lists a copy of the weights taken
    after the first step at which that share of the run has passed (of the wall-clock budget or of
    ``max_steps``, whichever is further, as the learning-rate schedule counts it): ``{"fraction", "step",
    "state_dict"}`` each, in increasing order. Taking them does not change the training itself."""
    fractions = sorted(snapshot_fractions)
    if any(not 0 < f < 1 for f in fractions) or len(set(fractions)) != len(fractions):
        raise ValueError(f"snapshot_fractions={snapshot_fractions!r}; pass distinct shares in (0, 1)")
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t0 = time.time()
    en, de = load_pairs("train", cfg.train_sentences)
    vocab = Seq2SeqVocab.train(en + de, cfg.vocab_size)
    pairs = [
        (vocab.encode(a)[: cfg.max_len], vocab.encode(b)[: cfg.max_len]) for a, b in zip(en, de, strict=True)
    ]
    model = build_model(cfg, vocab).to(cfg.device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), weight_decay=0.01)
    print(
        f"BPE {vocab.vocab_size} ids, {len(pairs)} pairs, T5-{cfg.size} {model.num_params() / 1e6:.1f}M "
        f"params ({time.time() - t0:.0f} s to prepare); load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    g = torch.Generator().manual_seed(cfg.seed)
    budget_s, start, step, losses, snapshots = cfg.budget_minutes * 60, time.time(), 0, [], []
    model.train()
    while step < cfg.max_steps and time.time() - start < budget_s:
        progress = max(step / cfg.max_steps, (time.time() - start) / budget_s)
        lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps) * 0.5 * (1 + math.cos(math.pi * progress))
        for group in opt.param_groups:
            group["lr"] = lr
        batch = [pairs[i] for i in torch.randint(len(pairs), (cfg.batch_size,), generator=g).tolist()]
        src, src_mask = pad_batch([p[0] for p in batch], vocab.pad_id, cfg.device)
        tgt, tgt_mask = pad_batch([p[1] for p in batch], vocab.pad_id, cfg.device)
        targets = tgt.masked_fill(tgt_mask == 0, IGNORE_INDEX)  # (B, T): padding is not predicted
        logits, _ = model(src, shift_right(targets, vocab.pad_id, vocab.pad_id), src_mask)
        loss = F.cross_entropy(
            logits.view(-1, logits.size(-1)),
            targets.view(-1),
            ignore_index=IGNORE_INDEX,
            label_smoothing=cfg.label_smoothing,
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        step += 1
        done = max(step / cfg.max_steps, (time.time() - start) / budget_s)
        while len(snapshots) < len(fractions) and done >= fractions[len(snapshots)]:
            snapshots.append(_snapshot(model, fractions[len(snapshots)], step))
        if step % 100 == 0:
            print(
                f"step {step}: loss {sum(losses[-100:]) / 100:.3f}, lr {lr:.2e}, {time.time() - start:.0f} s",
                flush=True,
            )
    stats = dict(
        steps=step,
        train_minutes=round((time.time() - start) / 60, 2),
        final_train_loss=round(sum(losses[-50:]) / len(losses[-50:]), 3),
        losses=losses,
    )
    if fractions:  # a share the clock passed after the last check is taken at the end
        snapshots += [_snapshot(model, f, step) for f in fractions[len(snapshots) :]]
        stats["snapshots"] = snapshots
    return model, vocab, stats


def _snapshot(model: T5, fraction: float, step: int) -> dict:
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return dict(fraction=fraction, step=step, state_dict=state)


def main(cfg: TranslationConfig) -> dict:
    """Train for the budget, translate test_2016_flickr, return (and print) the summary with sacreBLEU."""
    import sacrebleu  # the scorer is a reference library: imported where the score is computed

    model, vocab, stats = train(cfg)
    test_en, test_de = load_pairs("test_2016_flickr", cfg.eval_sentences)
    hyps = translate(model, vocab, test_en, cfg.num_beams, device=cfg.device)
    bleu = sacrebleu.corpus_bleu(hyps, [test_de])
    summary = dict(
        bleu=round(bleu.score, 2),
        bleu_signature=str(bleu),
        **{k: v for k, v in stats.items() if k != "losses"},
        params=model.num_params(),
        load_average=os.getloadavg(),
        examples=[(s, h, r) for s, h, r in zip(test_en[:3], hyps[:3], test_de[:3], strict=True)],
        config=asdict(cfg),
    )
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=1, ensure_ascii=False))
    summary["hypotheses"] = hyps
    if cfg.out:
        with open(cfg.out, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=1, ensure_ascii=False)
    return summary


def cli(argv=None) -> dict:
    """``python -m gpt.tasks.translation [flags]``: flags are the fields of :class:`TranslationConfig`."""
    cfg = parse_dataclass(
        TranslationConfig,
        argv,
        prog="python -m gpt.tasks.translation",
        description="T5 from scratch on Multi30k En->De: train for a budget, report sacreBLEU",
    )
    return main(cfg)


if __name__ == "__main__":
    cli()
