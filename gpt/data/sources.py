"""Where documents come from: named datasets, local files and folders, split into train and val.

Teaches the first step of every data pipeline: turn heterogeneous raw sources into one list of
documents (strings), with a train/val split that does not change between runs. Named datasets:

- ``pystdlib``: every ``.py`` file of the running Python's standard library (sorted, test folders
  and site-packages left out), one file per document; val = the files whose relative path hashes
  below ``val_fraction`` (so the split is fixed for a Python version and never depends on a seed).
  Offline and deterministic: the default corpus of ``make demo``.
- ``tinyshakespeare``: one document, split at the last line break before ``(1 - val_fraction)`` of its
  characters, as nanoGPT's ``shakespeare_char/prepare.py`` splits it 90/10.
- ``wikitext2``: ``valid.txt`` is used for training and ``test.txt`` for validation (the course data
  has no train split, see its SOURCE.md); each `` = Title = `` article is a document.
- ``fineweb-edu``: the ``sample-10BT`` config of ``HuggingFaceFW/fineweb-edu``, streamed from the
  Hugging Face hub with the optional ``datasets`` package (Penedo et al. 2024).

Local sources: a ``.txt`` file (one document), a ``.jsonl`` file (one document per line, its ``text``
field), a ``.parquet`` file (its ``text`` column, via the optional ``pyarrow``), or a folder of those.
Named datasets are read from ``$LLM_COURSE_DATA`` and, when missing, downloaded there from their public
URLs with a progress bar.
"""

import hashlib
import itertools
import json
import re
import sysconfig
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gpt.data.paths import data_root

KNOWN_DATASETS = ("pystdlib", "tinyshakespeare", "wikitext2", "fineweb-edu")
LOCAL_SUFFIXES = (".txt", ".jsonl", ".parquet")
TINYSHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
WIKITEXT2_URL = (
    "https://raw.githubusercontent.com/pytorch/examples/main/word_language_model/data/wikitext-2/{}"
)
STDLIB_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}


@dataclass
class Corpus:
    """Documents of one source, already split; ``description`` says what was read, for meta.json."""

    name: str
    description: str
    train: list[str]
    val: list[str]


def unit_hash(key: str, seed: int = 0) -> float:
    """A stable number in [0, 1) for a string (blake2b, not Python's per-process salted ``hash``)."""
    digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


def split_by_hash(docs: list[str], keys: list[str], val_fraction: float, seed: int = 0):
    """(train, val): a document goes to val when ``unit_hash(key, seed) < val_fraction``.

    With two or more documents and ``val_fraction > 0``, val is never empty: if no hash falls below the
    fraction, the document with the smallest hash goes to val.
    """
    scores = [unit_hash(k, seed) for k in keys]
    is_val = [s < val_fraction for s in scores]
    if val_fraction > 0 and len(docs) >= 2 and not any(is_val):
        is_val[min(range(len(docs)), key=scores.__getitem__)] = True
    train = [d for d, v in zip(docs, is_val, strict=True) if not v]
    val = [d for d, v in zip(docs, is_val, strict=True) if v]
    return train, val


def split_text(text: str, val_fraction: float) -> tuple[str, str]:
    """Split one document at the last line break before ``(1 - val_fraction) * len(text)``."""
    cut = int(len(text) * (1 - val_fraction))
    if val_fraction > 0 and cut < len(text):
        line_break = text.rfind("\n", 0, cut)
        cut = line_break + 1 if line_break > 0 else cut
    return text[:cut], text[cut:]


def download(url: str, dest: Path) -> Path:
    """Fetch ``url`` to ``dest`` with a tqdm progress bar, atomically (``file://`` URLs work too)."""
    from tqdm import tqdm

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as f:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {dest.name}") as bar:
                while chunk := response.read(1 << 20):
                    f.write(chunk)
                    bar.update(len(chunk))
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise FileNotFoundError(
            f"{dest} is not in the data folder and downloading it from {url} failed ({err}). "
            f"Copy the file there by hand, or point LLM_COURSE_DATA at a folder that has it."
        ) from None
    tmp.replace(dest)
    return dest


def fetch(dataset: str, filename: str, url: str) -> Path:
    """``$LLM_COURSE_DATA/<dataset>/<filename>``, downloaded from ``url`` first if it is missing."""
    path = data_root() / dataset / filename
    return path if path.is_file() else download(url, path)


def stdlib_files(stdlib_dir=None) -> list[tuple[str, Path]]:
    """(relative path, path) of the standard library's .py files, sorted, without tests or site-packages."""
    root = Path(stdlib_dir or sysconfig.get_paths()["stdlib"])
    files = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        if STDLIB_SKIP_DIRS.isdisjoint(rel.parts[:-1]) and path.is_file():
            files.append((rel.as_posix(), path))
    return sorted(files)


def load_pystdlib(val_fraction: float, stdlib_dir=None) -> Corpus:
    import platform

    files = stdlib_files(stdlib_dir)
    keys, docs = [], []
    for rel, path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        if text.strip():  # empty __init__.py files are not documents
            keys.append(rel)
            docs.append(text)
    train, val = split_by_hash(docs, keys, val_fraction)
    where = stdlib_dir or sysconfig.get_paths()["stdlib"]
    desc = f"pystdlib: {len(docs)} .py files of Python {platform.python_version()} stdlib ({where})"
    return Corpus("pystdlib", desc, train, val)


def load_tinyshakespeare(val_fraction: float) -> Corpus:
    path = fetch("tinyshakespeare", "input.txt", TINYSHAKESPEARE_URL)
    train, val = split_text(path.read_text(encoding="utf-8"), val_fraction)
    return Corpus("tinyshakespeare", f"tinyshakespeare: {path}", [train], [val] if val else [])


def wikitext_articles(text: str) -> list[str]:
    """Split WikiText into articles at top-level headings `` = Title = `` (not `` = = Section = = ``)."""
    starts = [m.start() for m in re.finditer(r"^ = [^=].* = $", text, flags=re.M)]
    if not starts:
        return [text] if text.strip() else []
    bounds = [*starts, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds) if text[a:b].strip()]


def load_wikitext2() -> Corpus:
    train_path = fetch("wikitext2", "valid.txt", WIKITEXT2_URL.format("valid.txt"))
    val_path = fetch("wikitext2", "test.txt", WIKITEXT2_URL.format("test.txt"))
    train = wikitext_articles(train_path.read_text(encoding="utf-8"))
    val = wikitext_articles(val_path.read_text(encoding="utf-8"))
    return Corpus("wikitext2", f"wikitext2: train={train_path}, val={val_path}", train, val)


def stream_fineweb_edu(max_docs: int | None) -> Iterator[str]:
    """The first ``max_docs`` documents (default 100,000) of FineWeb-Edu sample-10BT, one at a time,
    streamed from the HF hub: ``prepare`` tokenizes them as they arrive, so 10B tokens never sit in memory."""
    try:
        import datasets  # optional: only this source needs it
    except ImportError:
        raise ImportError(
            "source 'fineweb-edu' streams from the Hugging Face hub and needs the 'datasets' package: "
            "pip install datasets (and a network connection)"
        ) from None
    max_docs = 100_000 if max_docs is None else max_docs

    def documents():
        try:
            stream = datasets.load_dataset(
                "HuggingFaceFW/fineweb-edu", name="sample-10BT", split="train", streaming=True
            )
            for _, row in zip(range(max_docs), stream, strict=False):
                yield row["text"]
        except Exception as err:  # the hub raises many kinds of errors when offline
            raise ConnectionError(
                f"could not stream HuggingFaceFW/fineweb-edu (sample-10BT) from the Hugging Face hub: "
                f"{err}. It needs a network connection; offline, use 'pystdlib' or local files."
            ) from err

    return documents()


def load_fineweb_edu(val_fraction: float, max_docs: int | None, seed: int) -> Corpus:
    """``stream_fineweb_edu`` read into memory and split by the hash of each document's index."""
    docs = list(stream_fineweb_edu(max_docs))
    train, val = split_by_hash(docs, [str(i) for i in range(len(docs))], val_fraction, seed)
    return Corpus("fineweb-edu", f"fineweb-edu: first {len(docs)} docs of sample-10BT", train, val)


# sources that ``prepare`` can read one document at a time (name -> function(max_docs) -> Iterator[str])
STREAMED_DATASETS = {"fineweb-edu": stream_fineweb_edu}


def read_local_file(path: Path) -> list[str]:
    """Documents of one local file: a .txt is one document, .jsonl / .parquet give their ``text`` field."""
    if path.suffix == ".txt":
        return [path.read_text(encoding="utf-8", errors="replace")]
    if path.suffix == ".jsonl":
        docs = []
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    docs.append(row["text"])
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise ValueError(
                        f"{path}:{lineno} is not a JSON object with a 'text' field: {line[:80]!r}"
                    ) from None
        return docs
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq  # optional: only parquet sources need it
        except ImportError:
            raise ImportError(f"reading {path} needs pyarrow: pip install pyarrow") from None
        table = pq.read_table(path)
        if "text" not in table.column_names:
            raise ValueError(f"{path} has no 'text' column (columns: {table.column_names})")
        return [t for t in table.column("text").to_pylist() if t is not None]
    raise ValueError(f"{path}: unsupported file type {path.suffix!r}; use one of {LOCAL_SUFFIXES}")


def load_local(path: Path, val_fraction: float, seed: int) -> Corpus:
    files = sorted(p for p in path.rglob("*") if p.suffix in LOCAL_SUFFIXES) if path.is_dir() else [path]
    if not files:
        raise ValueError(f"folder {path} holds no {'/'.join(LOCAL_SUFFIXES)} files")
    keys, docs = [], []
    for f in files:
        rel = f.relative_to(path).as_posix() if path.is_dir() else f.name
        for i, doc in enumerate(read_local_file(f)):
            keys.append(f"{rel}:{i}")
            docs.append(doc)
    if len(docs) == 1:  # one document: split its text, as for tinyshakespeare
        train, val = split_text(docs[0], val_fraction)
        train_docs, val_docs = [train], [val] if val else []
    else:
        train_docs, val_docs = split_by_hash(docs, keys, val_fraction, seed)
    return Corpus(
        path.name, f"local: {path} ({len(files)} files, {len(docs)} documents)", train_docs, val_docs
    )


def source_fingerprint(source: str) -> str:
    """A short string that changes when a source's content may have changed (for prepare's reuse check):
    the Python version and stdlib folder for pystdlib, names/sizes/mtimes for local files."""
    if source == "pystdlib":
        import platform

        return f"python {platform.python_version()} {sysconfig.get_paths()['stdlib']}"
    path = Path(source)
    if source in KNOWN_DATASETS or not path.exists():
        return source
    files = sorted(p for p in path.rglob("*") if p.suffix in LOCAL_SUFFIXES) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for f in files:
        stat = f.stat()
        digest.update(f"{f}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def load_corpus(
    source: str, *, val_fraction: float = 0.05, seed: int = 0, max_docs: int | None = None
) -> Corpus:
    """A named dataset or a local file/folder as a ``Corpus``; ``max_docs`` caps each split's documents.

    ``seed`` chooses the split of local files and fineweb-edu; pystdlib's split depends only on the
    files' paths, tinyshakespeare's only on ``val_fraction``, wikitext2's on nothing (fixed files).
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction={val_fraction}; it must be in [0, 1)")
    if source == "pystdlib":
        corpus = load_pystdlib(val_fraction)
    elif source == "tinyshakespeare":
        corpus = load_tinyshakespeare(val_fraction)
    elif source == "wikitext2":
        corpus = load_wikitext2()
    elif source == "fineweb-edu":
        corpus = load_fineweb_edu(val_fraction, max_docs, seed)
    elif Path(source).suffix in LOCAL_SUFFIXES or Path(source).is_dir():
        if not Path(source).exists():
            raise FileNotFoundError(f"local source {source} does not exist")
        corpus = load_local(Path(source), val_fraction, seed)
    else:
        raise ValueError(
            f"unknown source {source!r}: use a dataset name ({', '.join(KNOWN_DATASETS)}) or a local "
            f"file/folder of {'/'.join(LOCAL_SUFFIXES)} files"
        )
    if max_docs is not None:
        corpus.train, corpus.val = corpus.train[:max_docs], corpus.val[:max_docs]
    return corpus
