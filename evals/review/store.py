"""The rating app's SQLite store: items, labels, undo and export, safe under concurrent writers.

Teaches what makes human labels trustworthy to collect: each label is one transaction (``BEGIN IMMEDIATE``
... ``COMMIT`` with ``synchronous=FULL`` in WAL mode), so a label acknowledged to the client survives the
server being killed; every submission carries an idempotency key (``UNIQUE``), so a retried request never
doubles a label; a partial unique index allows one live label per (rater, item), undo marks a label
``undone`` instead of deleting it, and the schema carries its version (``PRAGMA user_version``) so that a
newer database is refused rather than misread. Pairwise items are shown with a seeded, per-(rater, item)
side assignment (``left_for``) that each label records, so position bias can be measured later.
No web stack here: :mod:`evals.review.app` serves it.

References: SQLite's "Write-Ahead Logging" and "PRAGMA synchronous" docs; Stripe's idempotency keys;
Zheng et al. 2023 (MT-Bench / Chatbot Arena: pairwise votes with randomised sides and ties).
"""

import csv
import hashlib
import io
import json
import sqlite3
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

SCHEMA_VERSION = 1
LIKERT = range(1, 6)
CHOICES = {"left", "right", "tie"}
DEFAULT_RUBRIC = (
    "1 = wrong or harmful; 2 = mostly unhelpful; 3 = partly correct or incomplete; "
    "4 = correct with minor issues; 5 = correct, complete and clear"
)
EXPORT_COLUMNS = (
    "item_id", "kind", "rater", "left", "choice", "preferred_model", "rating", "created", "key",
)  # fmt: skip

_SCHEMA = """
CREATE TABLE items (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL UNIQUE,          -- load order: the queue order
    kind TEXT NOT NULL CHECK (kind IN ('pairwise', 'likert')),
    record TEXT NOT NULL                  -- the JSONL record as loaded
);
CREATE TABLE labels (
    n INTEGER PRIMARY KEY AUTOINCREMENT,  -- submission order: undo takes the rater's largest live n
    key TEXT NOT NULL UNIQUE,             -- the client's idempotency key
    rater TEXT NOT NULL,
    item_id TEXT NOT NULL REFERENCES items (id),
    left TEXT CHECK (left IN ('a', 'b')),                 -- pairwise: the output shown on the left
    choice TEXT CHECK (choice IN ('a', 'b', 'tie')),      -- pairwise: the preferred underlying output
    rating INTEGER CHECK (rating BETWEEN 1 AND 5),        -- likert
    created REAL NOT NULL,
    undone REAL                           -- when it was undone; NULL while live
);
CREATE UNIQUE INDEX one_live_label ON labels (rater, item_id) WHERE undone IS NULL;
"""


class LabelError(ValueError):
    """A refused submission; ``status`` is the HTTP code the app answers with (404, 409 or 422)."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


def item_kind(rec: dict, where: str = "item") -> str:
    """'pairwise' ({id, prompt, a, b}) or 'likert' ({id, prompt, output}); anything else raises."""
    if not isinstance(rec, dict) or not isinstance(rec.get("id"), str) or not rec["id"]:
        raise ValueError(f"{where}: needs a non-empty string 'id', got {rec!r:.80}")
    pairwise, single = "a" in rec or "b" in rec, "output" in rec
    if pairwise == single:
        raise ValueError(f"{where} {rec['id']!r}: give either 'a' and 'b' (pairwise) or 'output' (likert)")
    needed = ("prompt", "a", "b") if pairwise else ("prompt", "output")
    for name in needed + tuple(k for k in ("model_a", "model_b", "rubric") if k in rec):
        if not isinstance(rec.get(name), str):
            raise ValueError(f"{where} {rec['id']!r}: {name!r} must be a string, got {rec.get(name)!r:.80}")
    return "pairwise" if pairwise else "likert"


class ReviewStore:
    """One SQLite file of items and labels; thread-safe (one connection behind a lock)."""

    def __init__(self, path, seed: int = 0):
        self.path, self.seed = Path(path), seed
        self.lock = threading.Lock()
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA busy_timeout = 10000")  # another process (an export) may hold the lock
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version == 0 and self.db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
            self.db.close()
            raise ValueError(f"{self.path} is an SQLite file but not a review database: give a new --db")
        if version not in (0, SCHEMA_VERSION):
            self.db.close()
            fix = "upgrade llm-course, or give a new --db" if version > SCHEMA_VERSION else "give a new --db"
            known = f"this code reads version {SCHEMA_VERSION}"
            raise ValueError(f"{self.path} has review schema version {version}, {known}: {fix}")
        if version == 0:
            self.db.executescript(f"BEGIN; {_SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = FULL")  # a commit is on disk before the client hears of it

    def close(self):
        with self.lock:
            self.db.close()

    def _write(self, sql_args: list[tuple[str, tuple]]):
        """Run the statements as one transaction."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for sql, args in sql_args:
                self.db.execute(sql, args)
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def load_items(self, records: list[dict]) -> int:
        """Add the records not loaded yet (all in one transaction); returns how many were new.
        A known id whose record changed raises: the labels already given refer to the old one."""
        rows = []
        with self.lock:
            seq = self.db.execute("SELECT coalesce(max(seq), -1) FROM items").fetchone()[0]
            seen = {}
            for i, rec in enumerate(records):
                kind = item_kind(rec, f"item {i}")
                if rec["id"] in seen:
                    raise ValueError(f"item {i}: id {rec['id']!r} repeats item {seen[rec['id']]}")
                seen[rec["id"]] = i
                old = self.db.execute("SELECT record FROM items WHERE id = ?", (rec["id"],)).fetchone()
                if old is not None:
                    if json.loads(old[0]) != rec:
                        raise ValueError(f"item {rec['id']!r} differs from the one in {self.path}: rename it")
                    continue
                seq += 1
                rows.append(
                    ("INSERT INTO items VALUES (?, ?, ?, ?)", (rec["id"], seq, kind, json.dumps(rec)))
                )
            self._write(rows)
        return len(rows)

    def item(self, item_id: str) -> dict | None:
        with self.lock:
            row = self.db.execute("SELECT record FROM items WHERE id = ?", (item_id,)).fetchone()
        return None if row is None else json.loads(row[0])

    def left_for(self, rater: str, item_id: str) -> str:
        """Which output ('a' or 'b') this rater sees on the left: a seeded hash, fixed per (rater, item)."""
        digest = hashlib.sha256(f"{self.seed}\0{rater}\0{item_id}".encode()).digest()
        return "ab"[digest[0] & 1]

    def progress(self, rater: str) -> tuple[int, int]:
        """(live labels by this rater, items)."""
        with self.lock:
            done = self.db.execute(
                "SELECT count(*) FROM labels WHERE rater = ? AND undone IS NULL", (rater,)
            ).fetchone()[0]
            total = self.db.execute("SELECT count(*) FROM items").fetchone()[0]
        return done, total

    def pending(self, rater: str) -> list[str]:
        """Ids of the items this rater has no live label for, in queue order."""
        with self.lock:
            rows = self.db.execute(
                "SELECT id FROM items WHERE id NOT IN "
                "(SELECT item_id FROM labels WHERE rater = ? AND undone IS NULL) ORDER BY seq",
                (rater,),
            ).fetchall()
        return [r[0] for r in rows]

    def last_label(self, rater: str) -> dict | None:
        """This rater's most recent live label: what undo would take back."""
        with self.lock:
            row = self.db.execute(
                "SELECT * FROM labels WHERE rater = ? AND undone IS NULL ORDER BY n DESC LIMIT 1", (rater,)
            ).fetchone()
        return None if row is None else dict(row)

    def add_label(
        self, key, rater, item_id, *, choice=None, shown_left=None, rating=None
    ) -> tuple[dict, bool]:
        """Record one label; returns (the stored row, whether it is new). ``choice`` is 'left', 'right' or
        'tie' as the rater saw it (``shown_left`` is the output the page showed on the left; it must be
        ``left_for(rater, item_id)``); ``rating`` is 1..5. A key seen before returns its row unchanged."""
        for name, value in (("key", key), ("rater", rater), ("item_id", item_id)):
            if not isinstance(value, str) or not value or len(value) > 200:
                raise LabelError(
                    f"{name!r} must be a non-empty string of at most 200 characters, got {value!r}"
                )
        with self.lock:
            kind = self.db.execute("SELECT kind FROM items WHERE id = ?", (item_id,)).fetchone()
            if kind is None:
                raise LabelError(f"no item {item_id!r} in {self.path.name}", status=404)
            left, stored = self._check(kind[0], rater, item_id, choice, shown_left, rating)
            row = (key, rater, item_id, left, stored, rating, time.time())
            old = self.db.execute("SELECT * FROM labels WHERE key = ?", (key,)).fetchone()
            if old is None:
                try:
                    self._write([("INSERT INTO labels VALUES (NULL, ?, ?, ?, ?, ?, ?, ?, NULL)", row)])
                except sqlite3.IntegrityError:
                    raise LabelError(
                        f"rater {rater!r} has already labelled item {item_id!r}: undo that label first",
                        status=409,
                    ) from None
                old, created = self.db.execute("SELECT * FROM labels WHERE key = ?", (key,)).fetchone(), True
            elif tuple(old)[1:7] != row[:6]:
                raise LabelError(f"idempotency key {key!r} was used for a different label", status=409)
            else:
                created = False
        return dict(old), created

    def _check(self, kind, rater, item_id, choice, shown_left, rating) -> tuple[str | None, str | None]:
        """(left, choice in a/b/tie terms) for a valid submission; LabelError (422/409) otherwise."""
        if kind == "likert":
            if choice is not None or shown_left is not None:
                raise LabelError(f"item {item_id!r} is rated 1-5: send 'rating', not 'choice'")
            if type(rating) is not int or rating not in LIKERT:
                raise LabelError(f"'rating' must be an integer from 1 to 5, got {rating!r}")
            return None, None
        if rating is not None:
            raise LabelError(
                f"item {item_id!r} is pairwise: send 'choice' (left, right or tie), not 'rating'"
            )
        if not isinstance(choice, str) or choice not in CHOICES:
            raise LabelError(f"'choice' must be one of 'left', 'right', 'tie', got {choice!r}")
        left = self.left_for(rater, item_id)
        if shown_left != left:
            raise LabelError(
                f"rater {rater!r} is shown output {left!r} of item {item_id!r} on the left, the submission "
                f"says {shown_left!r}: reload the page",
                status=409,
            )
        right = "b" if left == "a" else "a"
        return left, {"left": left, "right": right, "tie": "tie"}[choice]

    def undo(self, rater: str, key: str | None = None) -> dict | None:
        """Take back this rater's last live label (None when there is none). With ``key``, only if that
        is the label: a retried undo of an already-undone key returns it again and changes nothing."""
        with self.lock:
            row = self.db.execute(
                "SELECT * FROM labels WHERE rater = ? AND undone IS NULL ORDER BY n DESC LIMIT 1", (rater,)
            ).fetchone()
            if key is not None and (row is None or row["key"] != key):
                old = self.db.execute("SELECT * FROM labels WHERE key = ?", (key,)).fetchone()
                if old is not None and old["rater"] == rater and old["undone"] is not None:
                    return dict(old)
                raise LabelError(f"label {key!r} is not the last live label of rater {rater!r}", status=409)
            if row is None:
                return None
            self._write([("UPDATE labels SET undone = ? WHERE n = ?", (time.time(), row["n"]))])
            return dict(self.db.execute("SELECT * FROM labels WHERE n = ?", (row["n"],)).fetchone())

    def labels(self) -> list[dict]:
        """The live labels in submission order, as exported: model names resolved, times in ISO UTC."""
        with self.lock:
            rows = self.db.execute(
                "SELECT l.*, i.kind, i.record FROM labels l JOIN items i ON i.id = l.item_id "
                "WHERE l.undone IS NULL ORDER BY l.n"
            ).fetchall()
        out = []
        for r in rows:
            rec, preferred = json.loads(r["record"]), None
            if r["choice"] in ("a", "b"):
                preferred = rec.get(f"model_{r['choice']}", r["choice"])
            created = datetime.fromtimestamp(r["created"], timezone.utc).isoformat(timespec="milliseconds")
            values = dict(r, preferred_model=preferred, created=created)
            out.append({k: values[k] for k in EXPORT_COLUMNS})
        return out

    def export(self, path) -> int:
        """Write the live labels to ``path`` (.jsonl or .csv); returns how many."""
        path, rows = Path(path), self.labels()
        if path.suffix not in (".jsonl", ".csv"):
            raise ValueError(f"export to a .jsonl or .csv file, got {path}")
        path.write_text(dumps(rows, path.suffix[1:]), encoding="utf-8", newline="")
        return len(rows)


def dumps(rows: list[dict], fmt: str) -> str:
    """Exported labels as 'jsonl' (one object a line) or 'csv' (a header of ``EXPORT_COLUMNS``)."""
    if fmt == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if fmt != "csv":
        raise ValueError(f"export format must be 'jsonl' or 'csv', got {fmt!r}")
    out = io.StringIO()
    writer = csv.DictWriter(out, EXPORT_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
