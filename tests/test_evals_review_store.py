"""evals.review.store: the SQLite label store, read back through a separate ``sqlite3`` connection.

Reference: the database file itself, opened with the standard library's ``sqlite3`` (not the store), and
Python's ``csv`` / ``json`` readers for the exports; the side assignment is checked against the rows the
page would see. Hand-worked examples: a 'left' vote on an item shown b-left stores choice 'b'; undo of the
last label; a key retried returns the same row. Tolerance: exact rows; the left/right balance over 400
items within 4 binomial standard deviations (0.5 +- 0.1).
"""

import csv
import json
import sqlite3
import threading

import pytest

from evals.review.store import SCHEMA_VERSION, LabelError, ReviewStore, dumps

PAIRS = [
    {"id": f"p{i}", "prompt": f"q{i}", "a": f"A{i}", "b": f"B{i}", "model_a": "ma", "model_b": "mb"}
    for i in range(8)
]
SINGLES = [{"id": f"s{i}", "prompt": f"q{i}", "output": f"O{i}"} for i in range(3)]


def rows(path, where="1"):
    with sqlite3.connect(path) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute(f"SELECT * FROM labels WHERE {where} ORDER BY n")]


@pytest.fixture
def store(tmp_path):
    s = ReviewStore(tmp_path / "labels.sqlite", seed=0)
    assert s.load_items(PAIRS + SINGLES) == len(PAIRS + SINGLES)
    yield s
    s.close()


def pair_shown(store, rater, left):
    """A pairwise item this rater sees with ``left`` ('a' or 'b') on the left."""
    return next(p["id"] for p in PAIRS if store.left_for(rater, p["id"]) == left)


def test_schema_wal_and_version(store):
    with sqlite3.connect(store.path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 1
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("SELECT count(*) FROM items").fetchone()[0] == len(PAIRS + SINGLES)


def test_newer_or_foreign_database_is_refused(tmp_path):
    newer = tmp_path / "newer.sqlite"
    ReviewStore(newer).close()
    with sqlite3.connect(newer) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(ValueError, match=f"schema version {SCHEMA_VERSION + 1}.*upgrade"):
        ReviewStore(newer)
    with sqlite3.connect(newer) as db:
        db.execute("PRAGMA user_version = -1")
    with pytest.raises(ValueError, match="schema version -1, this code reads version 1: give a new --db"):
        ReviewStore(newer)
    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE t (x)")
    with pytest.raises(ValueError, match="not a review database"):
        ReviewStore(foreign)


def test_loading_is_idempotent_and_checked(store):
    assert store.load_items(PAIRS + SINGLES) == 0  # known ids are kept
    assert store.load_items([*SINGLES, {"id": "new", "prompt": "p", "output": "o"}]) == 1
    assert store.pending("r")[-1] == "new"  # new items join the queue's end
    with pytest.raises(ValueError, match="'p0' differs"):
        store.load_items([{**PAIRS[0], "a": "changed"}])
    bad = [
        ({"id": "x", "prompt": "p", "a": "1", "b": "2", "output": "3"}, "either 'a' and 'b'"),
        ({"id": "x", "prompt": "p", "a": "1"}, "'b' must be a string"),
        ({"id": "x", "output": "o"}, "'prompt' must be a string"),
        ({"prompt": "p", "output": "o"}, "non-empty string 'id'"),
        ({"id": "x", "prompt": "p", "output": 3}, "'output' must be a string"),
    ]
    for rec, message in bad:
        with pytest.raises(ValueError, match=message):
            store.load_items([rec])
    with pytest.raises(ValueError, match="repeats item 0"):
        store.load_items([{"id": "y", "prompt": "p", "output": "o"}] * 2)
    with sqlite3.connect(store.path) as db:
        assert db.execute("SELECT count(*) FROM items").fetchone()[0] == len(PAIRS + SINGLES) + 1


def test_sides_are_seeded_per_rater_and_balanced(tmp_path):
    ids = [f"i{k}" for k in range(400)]
    a, b = ReviewStore(tmp_path / "a.sqlite", seed=0), ReviewStore(tmp_path / "b.sqlite", seed=1)
    sides = [a.left_for("ada", i) for i in ids]
    assert sides == [a.left_for("ada", i) for i in ids]  # fixed per (rater, item)
    assert abs(sides.count("a") / 400 - 0.5) <= 0.1
    assert sides != [a.left_for("bob", i) for i in ids]
    assert sides != [b.left_for("ada", i) for i in ids]


def test_pairwise_vote_is_stored_in_terms_of_a_and_b(store):
    b_left, a_left = pair_shown(store, "ada", "b"), pair_shown(store, "ada", "a")
    store.add_label("k1", "ada", b_left, choice="left", shown_left="b")
    store.add_label("k2", "ada", a_left, choice="left", shown_left="a")
    tie = next(p["id"] for p in PAIRS if p["id"] not in (a_left, b_left))
    store.add_label("k3", "ada", tie, choice="tie", shown_left=store.left_for("ada", tie))
    store.add_label("k4", "ada", "s0", rating=4)
    got = {r["key"]: (r["item_id"], r["left"], r["choice"], r["rating"]) for r in rows(store.path)}
    assert got == {
        "k1": (b_left, "b", "b", None),
        "k2": (a_left, "a", "a", None),
        "k3": (tie, store.left_for("ada", tie), "tie", None),
        "k4": ("s0", None, None, 4),
    }
    assert store.progress("ada") == (4, len(PAIRS + SINGLES)) and store.progress("bob") == (0, 11)
    assert store.last_label("ada")["key"] == "k4"
    everything = [r["id"] for r in PAIRS + SINGLES]
    assert store.pending("ada") == [i for i in everything if i not in (b_left, a_left, tie, "s0")]


def test_retried_key_does_not_double(store):
    first, created = store.add_label("k", "ada", "s1", rating=2)
    again, created_again = store.add_label("k", "ada", "s1", rating=2)
    assert (created, created_again) == (True, False) and again == first
    with pytest.raises(LabelError, match="used for a different label") as err:
        store.add_label("k", "ada", "s1", rating=3)
    assert err.value.status == 409
    with pytest.raises(LabelError, match="already labelled") as err:
        store.add_label("other", "ada", "s1", rating=3)  # one live label per (rater, item)
    assert err.value.status == 409
    assert len(rows(store.path)) == 1


@pytest.mark.parametrize(
    "item, fields, status, message",
    [
        ("nope", {"rating": 3}, 404, "no item 'nope'"),
        ("s0", {"rating": 6}, 422, "from 1 to 5, got 6"),
        ("s0", {"rating": 0}, 422, "from 1 to 5"),
        ("s0", {"rating": 3.0}, 422, "an integer"),
        ("s0", {"rating": True}, 422, "an integer"),
        ("s0", {"rating": "3"}, 422, "an integer"),
        ("s0", {"choice": "left"}, 422, "rated 1-5"),
        ("p0", {"rating": 3}, 422, "is pairwise"),
        ("p0", {"choice": "both", "shown_left": "a"}, 422, "'left', 'right', 'tie'"),
        ("p0", {"choice": ["left"], "shown_left": "a"}, 422, "'left', 'right', 'tie'"),
    ],
)
def test_bad_labels_write_nothing(store, item, fields, status, message):
    with pytest.raises(LabelError, match=message) as err:
        store.add_label("k", "ada", item, **fields)
    assert err.value.status == status
    assert rows(store.path) == []


def test_wrong_side_and_bad_strings_write_nothing(store):
    item = pair_shown(store, "ada", "a")
    with pytest.raises(LabelError, match="reload the page") as err:
        store.add_label("k", "ada", item, choice="left", shown_left="b")
    assert err.value.status == 409
    for key, rater in (("", "ada"), ("k", ""), ("k", None), ("k" * 201, "ada")):
        with pytest.raises(LabelError, match="non-empty string"):
            store.add_label(key, rater, "s0", rating=1)
    assert rows(store.path) == []


def test_undo_takes_back_this_raters_last_label(store):
    store.add_label("a1", "ada", "s0", rating=1)
    store.add_label("b1", "bob", "s0", rating=5)
    store.add_label("a2", "ada", "s1", rating=2)
    assert store.undo("ada", "a2")["key"] == "a2"
    assert store.undo("ada", "a2")["key"] == "a2"  # a retried undo changes nothing more
    with pytest.raises(LabelError, match="not the last live label") as err:
        store.undo("ada", "b1")
    assert err.value.status == 409
    assert [r["key"] for r in rows(store.path, "undone IS NULL")] == ["a1", "b1"]
    assert store.pending("ada")[:2] == [p["id"] for p in PAIRS[:2]] and "s1" in store.pending("ada")
    store.add_label("a3", "ada", "s1", rating=4)  # the undone item can be labelled again
    assert store.undo("ada")["key"] == "a3" and store.undo("ada")["key"] == "a1"
    assert store.undo("ada") is None
    assert [r["key"] for r in rows(store.path, "undone IS NOT NULL")] == ["a1", "a2", "a3"]


def test_concurrent_writers_lose_and_double_nothing(store):
    """50 threads, each submitting its label twice (a retry), all released at once."""
    raters = [f"r{k}" for k in range(5)]
    jobs = [(f"{r}-{i['id']}", r, i["id"]) for r in raters for i in SINGLES + PAIRS[:7]][:50]
    assert len(jobs) == 50
    barrier, errors = threading.Barrier(50), []

    def submit(key, rater, item_id):
        barrier.wait()
        try:
            for _ in range(2):
                if item_id.startswith("s"):
                    store.add_label(key, rater, item_id, rating=3)
                else:
                    store.add_label(
                        key, rater, item_id, choice="tie", shown_left=store.left_for(rater, item_id)
                    )
        except Exception as err:  # collected, asserted below
            errors.append(err)

    threads = [threading.Thread(target=submit, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(r["key"] for r in rows(store.path)) == sorted(key for key, _, _ in jobs)


def test_export_jsonl_and_csv_agree(store, tmp_path):
    item = pair_shown(store, "ada", "b")
    store.add_label("k1", "ada", item, choice="left", shown_left="b")
    store.add_label("k2", "ada", "s2", rating=5)
    store.add_label("k3", "ada", "s0", rating=1)
    store.undo("ada")
    assert store.export(tmp_path / "out.jsonl") == store.export(tmp_path / "out.csv") == 2
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    with open(tmp_path / "out.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [{k: "" if v is None else str(v) for k, v in r.items()} for r in lines] == table
    assert [(r["key"], r["choice"], r["preferred_model"], r["rating"]) for r in lines] == [
        ("k1", "b", "mb", None),
        ("k2", None, None, 5),
    ]
    assert lines[0]["created"].endswith("+00:00")
    with pytest.raises(ValueError, match=r"\.jsonl or \.csv"):
        store.export(tmp_path / "out.txt")
    with pytest.raises(ValueError, match="'jsonl' or 'csv'"):
        dumps([], "xml")
