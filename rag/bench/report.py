"""The tables and the figure of ``python -m rag.bench --part rag`` (rag_vs_finetune.py makes the numbers)."""

import io

from gpt.training.checkpoint import write_atomic
from rag.plots import plot_rag_systems

ANSWER_COLUMNS = (  # (header, metric in evaluate()'s means, format)
    ("contains", "contains", "{:.3f}"),
    ("EM", "exact_match", "{:.3f}"),
    ("F1", "f1", "{:.3f}"),
    ("hit@3", "hit@3", "{:.3f}"),
    ("supported", "supported", "{:.3f}"),
    ("judge P(yes)", "judge_p_yes", "{:.3f}"),
)


def _cell(means: dict, metric: str, fmt: str) -> str:
    return fmt.format(means[metric]["value"]) if metric in means else "-"


def answer_rows(result: dict) -> list[list[str]]:
    rows = []
    for name, r in result["answers"].items():
        means, cost = r["means"], r["cost"]
        ci = means["contains"]["ci95"]
        row = [name] + [_cell(means, m, f) for _, m, f in ANSWER_COLUMNS]
        row[1] += f" [{ci[0]:.2f}, {ci[1]:.2f}]"
        row += [
            f"{cost['prompt_tokens']:.0f}",
            f"{cost['completion_tokens']:.1f}",
            f"{cost['wall_s_per_answer']:.2f}",
        ]
        rows.append(row)
    return rows


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def print_rag(result: dict) -> None:
    rs = result["retrieval_set"]
    print(f"\nretrieval: {rs['questions']} test questions over {rs['documents']} documents "
          f"({rs['chunks']} chunks), set {rs['qa_version'][:24]}")  # fmt: skip
    header = ["retriever", "hit@1", "hit@3", "hit@10", "MRR", "nDCG@10", "ms/query"]
    metrics = ("hit@1", "hit@3", "hit@10", "mrr", "ndcg@10")
    rows = [
        [n, *(f"{r[m]:.3f}" for m in metrics), f"{r['ms_per_query']:.1f}"]
        for n, r in result["retrieval"].items()
    ]
    print(table(header, rows))
    a, ft = result["answer_set"], result["finetune"]
    print(
        f"\nanswers: {a['test_questions']} held-out questions on {a['documents']} documents; the fine-tuned "
        f"model saw every document and {a['train_questions']} train questions ({ft['steps']} LoRA steps, "
        f"{ft['wall_s']:.0f} s)"
    )
    header = ["system", *(h for h, _, _ in ANSWER_COLUMNS), "prompt tok", "answer tok", "s/answer"]
    header[1] = "contains [95% CI]"
    print(table(header, answer_rows(result)))
    print(f"\nafter editing {len(result['edits'])} facts in the documents (indexes rebuilt, no retraining):")
    rows = [
        [n, f"{u['new']:.2f}", f"{u['old']:.2f}", f"{u['neither']:.2f}"] for n, u in result["update"].items()
    ]
    print(table(["system", "new fact", "old fact", "neither"], rows))


def plot_rag(result: dict, path) -> None:
    """``rag.plots.plot_rag_systems`` written to ``path`` (PNG, atomically)."""
    fig = plot_rag_systems(result)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    write_atomic(path, buf.getvalue())
