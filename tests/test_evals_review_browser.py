"""evals.review in a real browser: headless Debian Chromium driven by Playwright, against the real server.

A rater labels items with clicks and with keys, skips one, undoes one (``u`` and Ctrl+Z), and the labels
are read back from the SQLite file through a separate ``sqlite3`` connection. Reference: what the page
showed (which item text sat on the left) decides the expected stored choice, independently of the
store's side assignment; the untrusted outputs ``<script>alert(1)</script>`` and ``<img src=x
onerror=alert(1)>`` must show as literal text, with no dialog and no <img> element. Tolerance: exact rows.
The screenshot is kept in ``tmp_path`` (and at ``/tmp/h17/review.png`` when that folder exists).
"""

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from evals.review.app import build_app
from evals.review.store import ReviewStore
from kvcache.serve.app import Server

CHROMIUM = "/usr/bin/chromium"
XSS = ("<script>alert(1)</script>", "<img src=x onerror=alert(1)>")
ITEMS = [
    {
        "id": "xss",
        "prompt": "Reply with some HTML.",
        "a": XSS[0],
        "b": XSS[1],
        "model_a": "m1",
        "model_b": "m2",
    },
    {"id": "cap", "prompt": "Capital of France?", "a": "Paris.", "b": "Lyon, I think.", "model_a": "m1"},
    {"id": "sum", "prompt": "2 + 2 = ?", "output": "4", "rubric": "1 = wrong ... 5 = right and clear"},
    {"id": "poem", "prompt": "A haiku on rain.", "output": "Rain on the tin roof\nsoft drums"},
    {"id": "joke", "prompt": "Tell a joke.", "a": "Knock knock.", "b": "No."},
]


@pytest.fixture
def browser_page(tmp_path):
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"no Chromium at {CHROMIUM}: install Debian's `chromium` package (CI installs it)")
    store = ReviewStore(tmp_path / "labels.sqlite", seed=7)
    store.load_items(ITEMS)
    server = Server(build_app(store, "ada")).start()
    # Playwright starts Chromium without its sandbox by default (chromium_sandbox=False), which is what
    # lets it run as root in CI containers; no --no-sandbox flag is needed on top.
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM)
        page = browser.new_page(viewport={"width": 1100, "height": 760})
        dialogs, errors = [], []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.on("console", lambda m: m.type == "error" and errors.append(m.text))  # e.g. CSP refusals
        page.goto(f"http://127.0.0.1:{server.port}/?rater=ada")
        yield page, store, dialogs, errors
        browser.close()
    server.stop()
    store.close()


def shown(page) -> str:
    expect(page.locator("#item-id")).not_to_have_text("")
    return page.locator("#item-id").inner_text().strip("()")


def label_rows(path) -> list[dict]:
    with sqlite3.connect(path) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM labels ORDER BY n")]


def test_rate_with_clicks_and_keys_then_undo(browser_page, tmp_path):
    page, store, dialogs, errors = browser_page
    progress = page.locator("#progress")
    expect(progress).to_have_text("0 / 5")
    assert shown(page) == "xss"

    # the untrusted outputs are literal text: no script ran, no image element exists
    left, right = page.locator("#left").inner_text(), page.locator("#right").inner_text()
    assert {left, right} == set(XSS)
    assert page.locator("img").count() == 0 and page.locator("main script").count() == 0
    page.screenshot(path=tmp_path / "review.png", full_page=True)
    if Path("/tmp/h17").is_dir():
        shutil.copy(tmp_path / "review.png", "/tmp/h17/review.png")
    xss_left = "a" if left == ITEMS[0]["a"] else "b"
    page.get_by_role("button", name="Right is better").click()  # a click
    expect(progress).to_have_text("1 / 5")

    assert shown(page) == "cap"
    cap_left = "a" if page.locator("#left").inner_text() == ITEMS[1]["a"] else "b"
    page.keyboard.press("s")  # skip: it comes back once the rest are done
    expect(page.locator("#item-id")).to_have_text("(sum)")
    expect(page.locator("#rubric")).to_have_text(ITEMS[2]["rubric"])
    page.keyboard.press("4")
    expect(progress).to_have_text("2 / 5")

    assert shown(page) == "poem"
    page.get_by_role("button", name="Rating 2 of 5").click()
    expect(progress).to_have_text("3 / 5")
    page.keyboard.press("u")  # undo the poem's 2: it is shown again
    expect(progress).to_have_text("2 / 5")
    expect(page.locator("#item-id")).to_have_text("(poem)")
    page.keyboard.press("5")
    expect(progress).to_have_text("3 / 5")

    assert shown(page) == "joke"
    joke_left = "a" if page.locator("#left").inner_text() == ITEMS[4]["a"] else "b"
    page.keyboard.press("=")
    expect(progress).to_have_text("4 / 5")
    page.keyboard.press("Control+z")  # undo the tie, then vote again
    expect(progress).to_have_text("3 / 5")
    expect(page.locator("#item-id")).to_have_text("(joke)")
    page.keyboard.press("1")
    expect(progress).to_have_text("4 / 5")

    expect(page.locator("#item-id")).to_have_text("(cap)")  # the skipped item, last
    page.keyboard.press("2")
    expect(progress).to_have_text("5 / 5")
    expect(page.locator("#finished")).to_be_visible()

    other = {"a": "b", "b": "a"}
    rows = label_rows(store.path)
    live = [(r["item_id"], r["left"], r["choice"], r["rating"]) for r in rows if r["undone"] is None]
    assert live == [
        ("xss", xss_left, other[xss_left], None),
        ("sum", None, None, 4),
        ("poem", None, None, 5),
        ("joke", joke_left, joke_left, None),
        ("cap", cap_left, other[cap_left], None),
    ]
    undone = [(r["item_id"], r["choice"], r["rating"]) for r in rows if r["undone"] is not None]
    assert undone == [("poem", None, 2), ("joke", "tie", None)]
    assert len({r["key"] for r in rows}) == len(rows) == 7
    exported = [
        json.loads(line)
        for line in page.request.get(page.url.split("?")[0] + "export.jsonl").text().splitlines()
    ]
    assert [r["item_id"] for r in exported] == ["xss", "sum", "poem", "joke", "cap"]
    assert dialogs == [] and errors == []
