"""A question-answering set whose answers sit in its documents: the "pystdlib" corpus and its questions.

Teaches how to build a retrieval benchmark that can be checked: every gold answer appears verbatim in its
gold document, so a retriever is judged by whether it finds that document, a reader by whether it copies
the answer out, and a wrong answer is never the benchmark's fault. The corpus is the Python standard
library's own documentation on this interpreter: one :class:`~rag.documents.Document` per public function
of :data:`DEFAULT_MODULES` (its signature from ``inspect.signature``, its docstring from
``inspect.getdoc``). Two kinds of question:

- **which**: "Which function in the Python module `json` does the following: Serialize ``obj`` to a JSON
  formatted ``str``?" -> ``dumps`` (or ``json.dumps``). The docstring's first sentence, with the function's
  own name masked; a summary two functions of one module share is ambiguous and dropped.
- **default**: "What is the default value of the `indent` parameter of `json.dumps`?" -> ``None``, the
  ``repr`` the signature line shows (only ``None``, bool, int, float, str and bytes defaults: their repr is
  stable and readable; not ``''`` or ``b''``, which SQuAD's normalisation empties).

Everything is sorted and seeded, so one interpreter always builds the same set; :func:`version` hashes the
test split with the Python version (the docs come from it), so a result file names the exact questions.
:func:`split` splits by *question*: a model fine-tuned on the train split has seen every document (in its
retrieval index or its training text) but only the train questions. :func:`edit_facts` changes facts in the
documents (renames a function, changes a default) for the document-update experiment: a retrieval system
that reads the new documents should follow the edit, a model that memorised the old ones should not.

References: the construction follows the "answer appears in the passage" rule of SQuAD (Rajpurkar et al.
2016) and Natural Questions; the edit experiment follows the knowledge-update setting of Lewis et al. 2020,
"Retrieval-Augmented Generation for Knowledge-Intensive NLP Tasks" (swapping the index updates the model's
knowledge without retraining).
"""

import ast
import hashlib
import importlib
import inspect
import json
import os
import platform
import re
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from evals.text.squad import normalize_answer
from rag.documents import Document

DEFAULT_MODULES = (
    "base64", "binascii", "bisect", "calendar", "copy", "csv", "dataclasses", "difflib", "email.utils",
    "filecmp", "fnmatch", "functools", "glob", "gzip", "hashlib", "heapq", "html", "ipaddress", "json",
    "linecache", "math", "mimetypes", "os.path", "pprint", "random", "re", "secrets", "shlex", "shutil",
    "statistics", "string", "tarfile", "tempfile", "textwrap", "urllib.parse", "uuid", "warnings", "zlib",
)  # fmt: skip
KINDS = ("which", "default")
MAX_DOC_CHARS = 1200  # docstring characters kept per document (the heading and signature always stay)
SIMPLE_DEFAULTS = (type(None), bool, int, float, str, bytes)  # defaults whose repr is stable and readable
_SENTENCE_END = re.compile(r"(?<=[.!?])\s")


@dataclass(frozen=True)
class Question:
    """One question; each of ``golds`` appears verbatim in the document ``doc_id``."""

    id: str
    question: str
    golds: tuple[str, ...]
    doc_id: str
    kind: str

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"question {self.id!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if (
            isinstance(self.golds, str)
            or not self.golds
            or not all(isinstance(g, str) and g for g in self.golds)
        ):
            raise ValueError(
                f"question {self.id!r}: golds must be a non-empty tuple of str, got {self.golds!r}"
            )
        object.__setattr__(self, "golds", tuple(self.golds))


# -- the corpus -----------------------------------------------------------------------------------------


def _owns(module: str, mod, obj) -> bool:
    """Whether ``obj`` is the module's own function (or its C accelerator's), not an import."""
    owner = getattr(obj, "__module__", None)
    if owner is None:  # e.g. random.random, a method of the module's hidden Random instance
        return True
    names = {module, mod.__name__, module.rsplit(".", 1)[-1]} | (
        {"genericpath"} if module == "os.path" else set()
    )
    return owner.lstrip("_") in names


def _functions(module: str) -> list[tuple[str, inspect.Signature, str]]:
    """(name, signature, docstring) of the module's public documented functions, sorted by name."""
    mod = importlib.import_module(module)
    out = []
    for name in sorted(vars(mod)):
        obj = getattr(mod, name)
        if name.startswith("_") or not inspect.isroutine(obj) or not _owns(module, mod, obj):
            continue
        try:
            sig = inspect.signature(obj)
        except (TypeError, ValueError):  # a C function without a text signature
            continue
        doc = inspect.getdoc(obj)
        if doc and doc.strip():
            out.append((name, sig, doc.strip()))
    return out


def _cap(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit)
    return text[: cut if cut > 0 else limit].rstrip() + " ..."


def _askable(p: inspect.Parameter) -> bool:
    """A public parameter with a simple default that SQuAD's normalisation leaves something of (not ``''``,
    which it empties, nor ``b''``, which becomes a lone "b")."""
    if (
        p.name.startswith("_")
        or p.default is inspect.Parameter.empty
        or type(p.default) not in SIMPLE_DEFAULTS
    ):
        return False
    return p.default not in ("", b"") and bool(normalize_answer(repr(p.default)))


def build_corpus(modules=DEFAULT_MODULES, max_doc_chars: int = MAX_DOC_CHARS) -> list[Document]:
    """One Markdown document per public documented function: ``# mod.name``, the signature line, the
    docstring capped at ``max_doc_chars``. Sorted by id; ``meta`` holds the module, name, signature and the
    reprs of the simple defaults (``{"indent": "None", ...}``)."""
    if isinstance(modules, str):
        raise TypeError(f"modules must be a list of module names, got the str {modules!r}")
    docs = {}
    for module in sorted(set(modules)):
        try:
            functions = _functions(module)
        except ImportError as err:
            raise ValueError(f"module {module!r} cannot be imported ({err}); drop it from modules") from None
        for name, sig, doc in functions:
            doc_id = f"{module}.{name}"
            text = f"# {doc_id}\n\n`{name}{sig}`\n\n{_cap(doc, max_doc_chars)}"
            defaults = {p.name: repr(p.default) for p in sig.parameters.values() if _askable(p)}
            meta = {"module": module, "name": name, "signature": f"{name}{sig}", "defaults": defaults}
            docs[doc_id] = Document(id=doc_id, text=text, title=doc_id, meta=meta)
    return [docs[i] for i in sorted(docs)]


# -- the questions --------------------------------------------------------------------------------------


def first_sentence(doc: str) -> str | None:
    """The first sentence of a docstring's first paragraph, or None when there is no plain one."""
    para = " ".join(doc.split("\n\n", 1)[0].split())
    sentence = _SENTENCE_END.split(para, 1)[0].strip()
    if not 12 <= len(sentence) <= 240 or "(" in sentence.split(" ", 1)[0]:  # too short/long, or a signature
        return None
    return sentence


def mask_name(sentence: str, name: str) -> str:
    """Replace the function's own name (bare or dotted, e.g. ``json.dumps``) with "this function"."""
    return re.sub(rf"(?<![\w.])(?:\w+\.)*{re.escape(name)}\b", "this function", sentence)


def _default_questions(doc: Document) -> list[Question]:
    module, name = doc.meta["module"], doc.meta["name"]
    sig_line = doc.text.split("\n\n", 2)[1]
    out = []
    for param, gold in doc.meta.get("defaults", {}).items():
        if f"{param}={gold}" not in sig_line:  # e.g. a repr the signature abbreviates
            continue
        question = f"What is the default value of the `{param}` parameter of `{module}.{name}`?"
        out.append(Question(f"{doc.id}:default:{param}", question, (gold,), doc.id, "default"))
    return out


def _summary(doc: Document) -> str | None:
    """The first sentence of the docstring part of a :func:`build_corpus` document."""
    parts = doc.text.split("\n\n", 2)
    return first_sentence(parts[2]) if len(parts) == 3 else None


def build_questions(docs: list[Document]) -> list[Question]:
    """Both kinds of question for every document built by :func:`build_corpus`, sorted by id. A "which"
    question is skipped when the docstring has no plain first sentence or another function of the same
    module has the same masked summary; "default" questions cover every simple default."""
    summaries: dict[tuple[str, str], list[Document]] = {}
    for doc in docs:
        if "module" not in doc.meta or "name" not in doc.meta:
            raise ValueError(
                f"document {doc.id!r} has no module/name meta; build documents with build_corpus"
            )
        sentence = _summary(doc)
        if sentence is not None:
            summaries.setdefault((doc.meta["module"], mask_name(sentence, doc.meta["name"])), []).append(doc)
    questions = []
    for (module, summary), owners in summaries.items():
        if len(owners) > 1:
            continue
        doc = owners[0]
        text = f"Which function in the Python module `{module}` does the following: {summary.rstrip('.')}?"
        golds = (doc.meta["name"], doc.id)
        questions.append(Question(f"{doc.id}:which", text, golds, doc.id, "which"))
    for doc in docs:
        questions.extend(_default_questions(doc))
    return sorted(questions, key=lambda q: q.id)


def split(questions: list[Question], test_fraction: float = 0.2, seed: int = 0):
    """``(train, test)``: a seeded permutation of the questions (sorted by id first), the first
    ``round(test_fraction * n)`` to test; each part keeps id order."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    ordered = sorted(questions, key=lambda q: q.id)
    perm = np.random.default_rng(seed).permutation(len(ordered))
    n_test = round(test_fraction * len(ordered))
    test_idx = set(perm[:n_test].tolist())
    test = [q for i, q in enumerate(ordered) if i in test_idx]
    train = [q for i, q in enumerate(ordered) if i not in test_idx]
    return train, test


def version(questions: list[Question]) -> str:
    """``"py<X.Y.Z>-<sha256>"``: the Python version the docs came from and the sha256 of the questions'
    canonical JSON (sorted keys, compact, in id order), so a result names the exact set it scored."""
    rows = [asdict(q) for q in sorted(questions, key=lambda q: q.id)]
    blob = json.dumps(
        {"python": platform.python_version(), "questions": rows}, sort_keys=True, separators=(",", ":")
    )
    return f"py{platform.python_version()}-{hashlib.sha256(blob.encode()).hexdigest()}"


# -- files ----------------------------------------------------------------------------------------------


def _write_jsonl(path, rows: list[dict]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_jsonl(path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def save(path, questions: list[Question]) -> None:
    """Questions to JSONL, one per line (written to a temp file, fsynced, then renamed into place)."""
    _write_jsonl(path, [asdict(q) for q in questions])


def load(path) -> list[Question]:
    return [Question(**{**row, "golds": tuple(row["golds"])}) for row in _read_jsonl(path)]


def save_documents(path, docs: list[Document]) -> None:
    _write_jsonl(path, [{"id": d.id, "text": d.text, "title": d.title, "meta": d.meta} for d in docs])


def load_documents(path) -> list[Document]:
    return [Document(**row) for row in _read_jsonl(path)]


# -- the document-update experiment ---------------------------------------------------------------------

_RENAME_SUFFIXES = ("text", "all", "safe", "fast", "ex", "v2")


def _new_default(value, rng: np.random.Generator):
    """A different value for a simple default: bools flip, numbers move, strings grow, None becomes an int."""
    if isinstance(value, bool):
        return not value
    if value is None:
        return int(rng.integers(1, 10))
    if isinstance(value, int):
        return value + int(rng.integers(1, 10))
    if isinstance(value, float):
        return value + 0.5 * int(rng.integers(1, 10))
    return value + value[:1] * 2 if value else type(value)("x" if isinstance(value, str) else b"x")


def _rename(doc: Document, new_name: str) -> Document:
    module, name = doc.meta["module"], doc.meta["name"]
    new_id = f"{module}.{new_name}"
    _, sig_line, body = doc.text.split("\n\n", 2)
    # the body keeps the word (``cache`` in "unbounded cache"); only calls and dotted names are renamed
    pattern = rf"(?<![\w.])(?:{re.escape(doc.id)}\b|{re.escape(name)}(?=\())"
    body = re.sub(pattern, lambda m: new_id if m.group(0) == doc.id else new_name, body)
    text = f"# {new_id}\n\n{sig_line.replace(name, new_name, 1)}\n\n{body}"
    meta = {**doc.meta, "name": new_name, "signature": doc.meta["signature"].replace(name, new_name, 1)}
    return Document(id=new_id, text=text, title=new_id, meta=meta)


def edit_facts(docs: list[Document], questions: list[Question], n: int, seed: int = 0):
    """Change ``n`` facts, at most one per document: ``(new_docs, edited_questions)``.

    A "which" fact is edited by renaming the function in its document (``dumps`` -> ``dumps_text``: id,
    title, heading, signature and calls in the docstring), only for documents with no other question (so
    no question names the old function) whose summary does not use the name; a "default" fact by changing
    the default in the signature line (the docstring is left alone, so a sentence there may still give the
    old default). ``new_docs`` is ``docs`` with the edited ones replaced in place; ``edited_questions`` are
    the edited facts' questions with their new golds and doc ids (same ids and text, to pair before/after)."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    by_id = {d.id: d for d in docs}
    per_doc: dict[str, int] = {}
    for q in questions:
        per_doc[q.doc_id] = per_doc.get(q.doc_id, 0) + 1

    def renamable(q: Question) -> bool:  # the question survives the rename unchanged
        doc = by_id[q.doc_id]
        summary = _summary(doc)
        return per_doc[q.doc_id] == 1 and mask_name(summary, doc.meta["name"]) == summary

    eligible = [
        q
        for q in sorted(questions, key=lambda q: q.id)
        if q.doc_id in by_id and (q.kind == "default" or renamable(q))
    ]
    rng = np.random.default_rng(seed)
    chosen, seen = [], set()
    for i in rng.permutation(len(eligible)).tolist():
        q = eligible[i]
        if q.doc_id not in seen:
            chosen.append(q)
            seen.add(q.doc_id)
        if len(chosen) == n:
            break
    if len(chosen) < n:
        raise ValueError(
            f"only {len(chosen)} facts can be edited (one per document); ask for n <= {len(chosen)}"
        )
    replaced, edited = {}, []
    for q in sorted(chosen, key=lambda q: q.id):
        doc = by_id[q.doc_id]
        if q.kind == "which":
            new_name = f"{doc.meta['name']}_{_RENAME_SUFFIXES[int(rng.integers(len(_RENAME_SUFFIXES)))]}"
            new = _rename(doc, new_name)
            edited.append(replace(q, golds=(new_name, new.id), doc_id=new.id))
        else:
            param, old = q.id.rsplit(":", 1)[1], q.golds[0]
            value = _new_default(ast.literal_eval(old), rng)
            head, sig_line, body = doc.text.split("\n\n", 2)
            sig_line = sig_line.replace(f"{param}={old}", f"{param}={value!r}", 1)
            meta = {**doc.meta, "defaults": {**doc.meta["defaults"], param: repr(value)}}
            meta["signature"] = meta["signature"].replace(f"{param}={old}", f"{param}={value!r}", 1)
            new = Document(id=doc.id, text=f"{head}\n\n{sig_line}\n\n{body}", title=doc.title, meta=meta)
            edited.append(replace(q, golds=(repr(value),)))
        replaced[doc.id] = new
    return [replaced.get(d.id, d) for d in docs], edited
