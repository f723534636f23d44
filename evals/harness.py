"""``evaluate(task, backend)``: run a task's items through a backend, batched, resumable, with a progress bar.

Teaches the loop every harness has (lm-eval's ``evaluator.simple_evaluate``, HELM's runner): build the
requests of a batch of items, send them to the model, score each item, aggregate. What it adds:

- **resumable**: with ``out=path`` every finished item is appended to a JSONL file (flushed and fsynced
  per batch). The file opens with a header naming the task's fingerprint (spec + data bytes) and the
  model; a killed run started again with the same ``out`` skips the items already there, so no item is
  scored twice, and a file from another task or model is refused rather than mixed in. A line cut short
  by the kill is dropped and its item redone.
- **lite**: ``lite=Subset`` (from :mod:`evals.lite`) scores only the subset's items and reports the
  weighted estimate of the full score: the same code path, fewer items.

Reference: lm-evaluation-harness ``lm_eval/evaluator.py`` (requests per task, then per-item
``process_results`` and aggregation).
"""

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from evals.backend import Backend, GenRequest
from evals.metrics import aggregate, choice_scores, scorer
from evals.task import TaskSpec


@dataclass
class Results:
    """A finished evaluation: ``metrics[name] = {"value", "stderr", "ci95"}`` and one dict per item."""

    task: str
    model: str
    n: int
    metrics: dict
    items: list[dict] = field(repr=False)
    wall_s: float = 0.0  # time spent scoring items in this call (resumed items cost nothing)
    scored_now: int = 0  # items scored in this call (the rest came from ``out``)
    lite: bool = False

    def value(self, name: str) -> float:
        return self.metrics[name]["value"]


def _read_results(path: Path, header: dict) -> dict[str, dict]:
    """Items already in ``path`` (keyed by id); checks the header and cuts off a line torn by a kill."""
    lines = path.read_bytes().split(b"\n")  # the last piece is b"" unless the file ends mid-line
    try:
        old = json.loads(lines[0])
    except json.JSONDecodeError:
        raise ValueError(
            f"{path} is not a results file of evals.evaluate (bad header); pass another out"
        ) from None
    for key in ("task", "fingerprint", "model"):
        if old.get(key) != header[key]:
            raise ValueError(
                f"{path} holds results for {key}={old.get(key)!r}, not {header[key]!r}; resuming would mix "
                "runs: pass another out path (or delete that file to start over)"
            )
    done, good = {}, len(lines[0]) + 1
    for line in lines[1:-1]:  # complete lines only
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            break  # damaged: this item and everything after it are redone
        done[item["id"]] = item
        good += len(line) + 1
    if good < path.stat().st_size:
        with path.open("r+b") as f:
            f.truncate(good)
    return done


def _score_mc(task: TaskSpec, backend: Backend, records: list[dict]) -> list[dict]:
    requests, spans = [], []
    for rec in records:
        ctx = task.context(rec, backend.chat_template)
        conts = task.continuations(rec)
        spans.append((len(requests), len(conts)))
        requests += [(ctx, c) for c in conts]
    answers = backend.loglikelihood(requests)
    items = []
    for rec, (at, k) in zip(records, spans, strict=True):
        lls = [a[0] for a in answers[at : at + k]]
        gold = task.gold_index(rec)
        item = {
            "id": str(rec[task.id_field]),
            "gold": gold,
            "lls": lls,
            "is_greedy": [a[1] for a in answers[at : at + k]],
        }
        item.update(choice_scores(lls, task.choice_list(rec), gold))
        items.append(item)
    return items


def _score_gen(task: TaskSpec, backend: Backend, records: list[dict], seed: int) -> list[dict]:
    requests = []
    for rec in records:
        ctx = task.context(rec, backend.chat_template)
        for r in range(task.repeats):
            item_seed = None if task.temperature == 0 else hash_seed(seed, str(rec[task.id_field]), r)
            requests.append(GenRequest(ctx, task.stop, task.max_gen_toks, task.temperature, item_seed))
    texts = backend.generate(requests)
    score = scorer(task.metric)
    items = []
    for i, rec in enumerate(records):
        gens = texts[i * task.repeats : (i + 1) * task.repeats]
        target = task.answer(rec)
        item = {"id": str(rec[task.id_field]), "generations": gens, "target": target}
        item.update(score(gens, target, rec))
        items.append(item)
    return items


def hash_seed(seed: int, item_id: str, r: int) -> int:
    """A sampling seed per (run seed, item, sample): the same on a resumed run, whatever the batch."""
    import hashlib

    digest = hashlib.blake2b(f"{seed}:{item_id}:{r}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def evaluate(
    task: TaskSpec,
    backend: Backend,
    out=None,
    limit: int | None = None,
    lite=None,
    batch_items: int = 32,
    seed: int = 0,
    model: str | None = None,
    progress: bool = True,
) -> Results:
    """Score ``task`` with ``backend``. ``limit``: the first n items. ``lite``: a :class:`evals.lite.Subset`
    of item indices and weights. ``out``: a JSONL results file to resume from and append to. ``model``
    names the model in that file (default: the backend's name), so a file is only ever resumed by the run
    that started it."""
    if not isinstance(task, TaskSpec):
        raise TypeError(f"task must be an evals.TaskSpec, got {type(task).__name__}")
    if not isinstance(batch_items, int) or batch_items < 1:
        raise ValueError(f"batch_items must be a positive int, got {batch_items!r}")
    records, weights = task.records(), None
    if lite is not None:
        if limit is not None:
            raise ValueError("pass limit or lite, not both")
        bad = [i for i in lite.items if not 0 <= i < len(records)]
        if bad:
            raise ValueError(f"lite subset names items {bad[:5]} outside the task's {len(records)} items")
        records, weights = [records[i] for i in lite.items], list(lite.weights)
    elif limit is not None:
        if not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive int, got {limit!r}")
        records = records[:limit]
    header = {"task": task.name, "fingerprint": task.fingerprint(), "model": model or backend.name}
    done: dict[str, dict] = {}
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists():
            done = _read_results(out, header)
        if not out.exists() or out.stat().st_size == 0:
            out.write_text(json.dumps(header) + "\n", encoding="utf-8")
    todo = [r for r in records if str(r[task.id_field]) not in done]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(records), initial=len(records) - len(todo), desc=task.name, unit="item")
    t0 = time.perf_counter()
    for start in range(0, len(todo), batch_items):
        chunk = todo[start : start + batch_items]
        if task.kind == "multiple_choice":
            items = _score_mc(task, backend, chunk)
        else:
            items = _score_gen(task, backend, chunk, seed)
        for it in items:
            done[it["id"]] = it
        if out is not None:
            with out.open("a", encoding="utf-8") as f:
                f.writelines(json.dumps(it) + "\n" for it in items)
                f.flush()
                os.fsync(f.fileno())
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    wall = time.perf_counter() - t0
    return _results(task, header["model"], records, done, weights, wall, len(todo))


def _results(task, model, records, done, weights=None, wall=0.0, scored_now=0) -> Results:
    items = [done[str(r[task.id_field])] for r in records]
    names = sorted({k for it in items for k, v in it.items() if isinstance(v, float)})
    metrics = aggregate(items, names, weights)
    return Results(task.name, model, len(items), metrics, items, wall, scored_now, weights is not None)


def saved_results(task: TaskSpec, out, model: str) -> Results | None:
    """The results file ``out`` read back when it holds every item of ``task`` for ``model``, else None;
    nothing is scored (a file from another task or model is refused, as when resuming)."""
    out = Path(out)
    if not out.exists() or out.stat().st_size == 0:
        return None
    done = _read_results(out, {"task": task.name, "fingerprint": task.fingerprint(), "model": model})
    records = task.records()
    if any(str(r[task.id_field]) not in done for r in records):
        return None
    return _results(task, model, records, done)
