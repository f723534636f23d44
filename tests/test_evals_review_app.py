"""evals.review.app: the rating app served by uvicorn on loopback, driven over real HTTP (``urllib``).

Reference: the SQLite file read through a separate ``sqlite3`` connection (what was acknowledged must be
there, exactly once), ``json``/``csv`` readers for the exports, and the items as written (untrusted text
must come back byte-for-byte as data and never as markup). Hand-worked examples: 50 submissions and their
50 retries at once give 50 rows; a server killed with SIGKILL right after its last 200 keeps every label.
"""

import csv
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from evals.review.app import build_app, main, parse_args
from evals.review.store import ReviewStore
from kvcache.serve.app import Server

XSS = ("<script>alert(1)</script>", "<img src=x onerror=alert(1)>")
ITEMS = [
    {
        "id": "xss",
        "prompt": "Greet & <b>bold</b>",
        "a": XSS[0],
        "b": XSS[1],
        "model_a": "m1",
        "model_b": "m2",
    },
    *[{"id": f"p{i}", "prompt": f"q{i}", "a": f"A{i}", "b": f"B{i}"} for i in range(24)],
    *[{"id": f"s{i}", "prompt": f"q{i}", "output": f"O{i}", "rubric": "1 bad .. 5 good"} for i in range(25)],
]


@dataclass
class Reply:
    status_code: int
    headers: dict
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode()

    def json(self):
        return json.loads(self.content)


class Client:
    """Just enough of an HTTP client over urllib (no proxies): get/post, a JSON ``body``, any status."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def request(self, method, path, params=(), body=None, content=None, headers=None) -> Reply:
        query = urllib.parse.urlencode(list(params.items() if isinstance(params, dict) else params))
        data = content.encode() if content is not None else None
        headers = dict(headers or {})
        if body is not None:
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        url = self.base_url + path + (f"?{query}" if query else "")
        try:
            with self.opener.open(urllib.request.Request(url, data, headers, method=method), timeout=60) as r:
                return Reply(r.status, dict(r.headers.items()), r.read())
        except urllib.error.HTTPError as err:
            return Reply(err.code, dict(err.headers.items()), err.read())

    def get(self, path, **kw) -> Reply:
        return self.request("GET", path, **kw)

    def post(self, path, **kw) -> Reply:
        return self.request("POST", path, **kw)


def live_rows(path) -> list[dict]:
    with sqlite3.connect(path) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM labels WHERE undone IS NULL ORDER BY n")]


@pytest.fixture
def served(tmp_path):
    store = ReviewStore(tmp_path / "labels.sqlite", seed=3)
    store.load_items(ITEMS)
    server = Server(build_app(store, 'ada <b>"x"</b>')).start()
    yield Client(f"http://127.0.0.1:{server.port}"), store
    server.stop()
    store.close()


def vote(store, rater, item_id, choice="tie") -> dict:
    return {
        "rater": rater,
        "item_id": item_id,
        "choice": choice,
        "shown_left": store.left_for(rater, item_id),
    }


def test_page_escapes_and_locks_down(served):
    client, _ = served
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    nonce = csp.split("'nonce-")[1].split("'")[0]
    assert "default-src 'none'" in csp and f'<script nonce="{nonce}">' in r.text and "{{" not in r.text
    assert 'data-rater="ada &lt;b&gt;&quot;x&quot;&lt;/b&gt;"' in r.text  # the rater name is escaped
    assert "innerHTML" not in r.text and "alert(1)" not in r.text  # outputs never reach the HTML
    assert nonce != client.get("/").headers["content-security-policy"].split("'nonce-")[1].split("'")[0]


def test_untrusted_text_travels_as_data(served):
    client, store = served
    r = client.get("/api/items/xss", params={"rater": "ada"})
    assert r.status_code == 200 and r.headers["x-content-type-options"] == "nosniff"
    assert b"<" not in r.content and b">" not in r.content and b"&" not in r.content
    item = r.json()["item"]
    left = store.left_for("ada", "xss")
    assert (item["shown_left"], item["prompt"]) == (left, ITEMS[0]["prompt"])
    assert (item["left"], item["right"]) == ((XSS[0], XSS[1]) if left == "a" else (XSS[1], XSS[0]))


def test_queue_skip_and_progress(served):
    client, _ = served
    first = client.get("/api/next", params={"rater": "bob"}).json()
    assert (first["item"]["id"], first["done"], first["total"], first["last_key"]) == ("xss", 0, 50, None)
    skipping = client.get("/api/next", params=[("rater", "bob"), ("skip", "xss"), ("skip", "p0")]).json()
    assert skipping["item"]["id"] == "p1"
    s = client.get("/api/items/s3", params={"rater": "bob"}).json()["item"]
    assert (s["kind"], s["output"], s["rubric"]) == ("likert", "O3", "1 bad .. 5 good")
    r = client.post("/api/labels", body={"key": "b1", "rater": "bob", "item_id": "s3", "rating": 2})
    assert r.status_code == 200 and (r.json()["created"], r.json()["done"], r.json()["total"]) == (
        True,
        1,
        50,
    )
    assert client.get("/api/next", params={"rater": "bob"}).json()["last_key"] == "b1"
    everything_but_two = [i["id"] for i in ITEMS if i["id"] not in ("p5", "s3")]
    params = [("rater", "bob")] + [("skip", i) for i in ["p5", *everything_but_two]]
    assert client.get("/api/next", params=params).json()["item"]["id"] == "p5"  # skipped longest ago


def test_undo_through_the_api(served):
    client, store = served
    for key, item in (("k1", "p0"), ("k2", "p1")):
        assert client.post("/api/labels", body={"key": key, **vote(store, "ada", item)}).status_code == 200
    r = client.post("/api/undo", body={"rater": "ada", "key": "k2"})
    assert r.status_code == 200 and r.json()["undone"]["key"] == "k2"
    assert client.post("/api/undo", body={"rater": "ada", "key": "k2"}).json()["undone"]["key"] == "k2"
    assert client.post("/api/undo", body={"rater": "ada", "key": "zz"}).status_code == 409
    assert [r["key"] for r in live_rows(store.path)] == ["k1"]


@pytest.mark.parametrize(
    "body, content_type, status, message",
    [
        (
            '{"key": "k", "rater": "ada", "item_id": "nope", "rating": 3}',
            "application/json",
            404,
            "no item 'nope'",
        ),
        (
            '{"key": "k", "rater": "ada", "item_id": "s0", "rating": 9}',
            "application/json",
            422,
            "1 to 5, got 9",
        ),
        (
            '{"key": "k", "rater": "ada", "item_id": "p0", "rating": 3}',
            "application/json",
            422,
            "is pairwise",
        ),
        (
            '{"key": "k", "rater": "ada", "item_id": "s0", "choice": "left"}',
            "application/json",
            422,
            "rated 1-5",
        ),
        ('{"rater": "ada", "item_id": "s0", "rating": 3}', "application/json", 422, "'key' must be"),
        (
            '{"key": "k", "rater": "ada", "item_id": "s0", "rating": 3, "x": 1}',
            "application/json",
            422,
            "unknown",
        ),
        (
            '{"key": "k", "rater": "ada", "item_id": "s0", "rating": 3',
            "application/json",
            400,
            "not valid JSON",
        ),
        ("[1, 2]", "application/json", 400, "a JSON object, got list"),
        ('{"key": "' + "k" * 70000 + '"}', "application/json", 413, "over the limit of 65536 bytes"),
        ('{"key": "k", "rater": "ada", "item_id": "s0", "rating": 3}', "text/plain", 415, "application/json"),
    ],
)
def test_bad_requests_get_a_clear_4xx_and_write_nothing(served, body, content_type, status, message):
    client, store = served
    r = client.post("/api/labels", content=body, headers={"Content-Type": content_type})
    assert r.status_code == status and message in r.json()["error"]
    assert live_rows(store.path) == []


def test_other_refusals(served):
    client, _ = served
    assert client.get("/api/items/nope").status_code == 404
    assert client.get("/api/next", headers={"Host": "evil.example"}).status_code == 400  # DNS rebinding
    assert client.get("/export.xml").status_code == 404
    assert client.get("/api/labels").status_code == 405
    assert client.post("/api/undo", body={"key": 3}).status_code == 422


def test_fifty_submissions_and_their_retries_at_once(served):
    client, store = served
    bodies = [{"key": f"key-{i['id']}", **vote(store, "ada", i["id"])} for i in ITEMS if "a" in i]
    bodies += [{"key": f"key-{i['id']}", "rater": "ada", "item_id": i["id"], "rating": 4} for i in ITEMS[25:]]
    assert len(bodies) == 50

    barrier = threading.Barrier(100)

    def post(body):
        barrier.wait()  # all 100 requests leave together
        return client.post("/api/labels", body=body)

    with ThreadPoolExecutor(100) as pool:
        replies = list(pool.map(post, bodies + bodies))
    assert [r.status_code for r in replies] == [200] * 100
    assert sorted(r.json()["created"] for r in replies) == [False] * 50 + [True] * 50
    assert sorted(r["key"] for r in live_rows(store.path)) == sorted(b["key"] for b in bodies)


def test_exports_over_http_and_cli(served, tmp_path):
    client, store = served
    client.post("/api/labels", body={"key": "k1", **vote(store, "ada", "xss", "left")})
    client.post("/api/labels", body={"key": "k2", "rater": "ada", "item_id": "s0", "rating": 5})
    lines = [json.loads(line) for line in client.get("/export.jsonl").text.splitlines()]
    table = list(csv.DictReader(io.StringIO(client.get("/export.csv").text)))
    assert [{k: "" if v is None else str(v) for k, v in r.items()} for r in lines] == table
    preferred = "m1" if store.left_for("ada", "xss") == "a" else "m2"
    assert [(r["key"], r["preferred_model"], r["rating"]) for r in lines] == [
        ("k1", preferred, None),
        ("k2", None, 5),
    ]
    assert client.get("/export.csv").headers["content-disposition"] == 'attachment; filename="labels.csv"'
    main(parse_args(["--db", str(store.path), "--export", str(tmp_path / "cli.jsonl")]))
    assert [json.loads(line) for line in (tmp_path / "cli.jsonl").read_text().splitlines()] == lines


def test_cli_refuses_a_newer_database(tmp_path):
    path = tmp_path / "new.sqlite"
    ReviewStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(ValueError, match="schema version 99"):
        main(parse_args(["--db", str(path), "--export", str(tmp_path / "x.csv")]))
    with pytest.raises(ValueError, match=r"--export takes a \.jsonl or \.csv"):
        parse_args(["--export", "x.txt"])


def test_killed_server_keeps_every_acknowledged_label(tmp_path):
    items, db = tmp_path / "items.jsonl", tmp_path / "labels.sqlite"
    items.write_text("".join(json.dumps(i) + "\n" for i in ITEMS))
    cmd = [sys.executable, "-m", "evals.review", "--db", str(db), "--items", str(items), "--port", "0"]
    proc = subprocess.Popen([*cmd, "--rater", "ada"], stdout=subprocess.PIPE, text=True)
    try:
        url = None
        while url is None:
            line = proc.stdout.readline()
            assert line, f"the server exited ({proc.wait()}) before printing its URL"
            url = next((w for w in line.split() if w.startswith("http://")), None)
        assert url.startswith("http://127.0.0.1:")  # loopback unless --host says otherwise
        acknowledged, client = [], Client(url.rstrip("/"))
        for k, item in enumerate(ITEMS[25:37]):
            body = {"key": f"k-{item['id']}", "rater": "ada", "item_id": item["id"], "rating": 1 + k % 5}
            if client.post("/api/labels", body=body).status_code == 200:
                acknowledged.append((body["key"], body["rating"]))
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.stdout.close()
    assert len(acknowledged) == 12
    assert (tmp_path / "labels.sqlite-wal").stat().st_size > 0  # the labels sat in the write-ahead log
    assert [(r["key"], r["rating"]) for r in live_rows(db)] == acknowledged
