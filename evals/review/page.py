"""The rating page: one HTML document with its small CSS and JS inline (no external assets: works offline).

Shows one item at a time, keyboard first (the keys are listed on the page), with progress and undo.
Every prompt and model output is untrusted text and is set with ``textContent``, never parsed as HTML; the
server's Content-Security-Policy runs only the script and style tagged with the response's nonce.
``{{nonce}}`` and ``{{rater}}`` (HTML-escaped) are filled in per response by :func:`evals.review.app.page`.
Reference: OWASP's Cross Site Scripting Prevention Cheat Sheet (safe sinks: ``textContent``).
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Review</title>
<style nonce="{{nonce}}">
  :root { --fg: #1b1b1b; --muted: #555; --line: #cfcfcf; --accent: #0b57d0; --bg: #f7f7f8; }
  body { margin: 0; font: 16px/1.5 system-ui, sans-serif; color: var(--fg); background: var(--bg); }
  header { display: flex; flex-wrap: wrap; gap: 1.25rem; align-items: baseline; padding: .75rem 1.5rem;
           background: #fff; border-bottom: 1px solid var(--line); }
  header h1 { font-size: 1.15rem; margin: 0; }
  #progress { font-weight: 600; font-variant-numeric: tabular-nums; }
  header nav { margin-left: auto; }
  a { color: var(--accent); }
  main, footer { max-width: 75rem; margin: 0 auto; padding: .5rem 1.5rem; }
  h2 { font-size: 1rem; margin: 1rem 0 .35rem; }
  .muted { color: var(--muted); font-weight: normal; }
  .text { margin: 0; padding: .75rem 1rem; background: #fff; border: 1px solid var(--line);
          border-radius: 6px; white-space: pre-wrap; overflow-wrap: anywhere;
          font: 15px/1.5 ui-monospace, monospace; }
  .pair { display: grid; grid-template-columns: 1fr 1fr; gap: 1rem; }
  @media (max-width: 50rem) { .pair { grid-template-columns: 1fr; } }
  .actions { display: flex; flex-wrap: wrap; gap: .5rem; margin: 1rem 0; }
  button { font: inherit; padding: .45rem .9rem; color: var(--fg); background: #fff;
           border: 1px solid #8a8a8a; border-radius: 6px; cursor: pointer; }
  button:hover:not(:disabled) { background: #eaf1fd; }
  button:focus-visible { outline: 3px solid var(--accent); outline-offset: 2px; }
  button:disabled { color: #999; cursor: default; }
  kbd { font: 13px ui-monospace, monospace; padding: 0 .3rem; background: #f2f2f2; border: 1px solid #aaa;
        border-bottom-width: 2px; border-radius: 4px; }
  #status { min-height: 1.5em; color: var(--muted); }
  #status.error { color: #b00020; font-weight: 600; }
  footer { color: var(--muted); font-size: .9rem; }
  [hidden] { display: none !important; }
</style>
</head>
<body data-rater="{{rater}}">
<header>
  <h1>Review</h1>
  <span>Rater: <strong id="rater"></strong></span>
  <span>Labelled: <span id="progress" aria-live="polite">– / –</span></span>
  <nav><a href="/export.jsonl">Export JSONL</a> · <a href="/export.csv">Export CSV</a></nav>
</header>
<main>
  <section id="prompt-box" hidden>
    <h2>Prompt <span id="item-id" class="muted"></span></h2>
    <pre id="prompt" class="text"></pre>
  </section>
  <section id="pairwise" hidden aria-label="Which response is better?">
    <div class="pair">
      <div><h2>Left response</h2><pre id="left" class="text"></pre></div>
      <div><h2>Right response</h2><pre id="right" class="text"></pre></div>
    </div>
    <div class="actions" role="group" aria-label="Which response is better?">
      <button data-choice="left" aria-keyshortcuts="1"><kbd>1</kbd> Left is better</button>
      <button data-choice="tie" aria-keyshortcuts="="><kbd>=</kbd> Tie</button>
      <button data-choice="right" aria-keyshortcuts="2"><kbd>2</kbd> Right is better</button>
    </div>
  </section>
  <section id="likert" hidden aria-label="Rate the response">
    <h2>Response</h2>
    <pre id="output" class="text"></pre>
    <h2>Rubric</h2>
    <p id="rubric"></p>
    <div class="actions" role="group" aria-label="Rating from 1 to 5">
      <button data-rating="1" aria-keyshortcuts="1" aria-label="Rating 1 of 5"><kbd>1</kbd></button>
      <button data-rating="2" aria-keyshortcuts="2" aria-label="Rating 2 of 5"><kbd>2</kbd></button>
      <button data-rating="3" aria-keyshortcuts="3" aria-label="Rating 3 of 5"><kbd>3</kbd></button>
      <button data-rating="4" aria-keyshortcuts="4" aria-label="Rating 4 of 5"><kbd>4</kbd></button>
      <button data-rating="5" aria-keyshortcuts="5" aria-label="Rating 5 of 5"><kbd>5</kbd></button>
    </div>
  </section>
  <section id="finished" hidden>
    <h2>Every item has a label from you.</h2>
    <p>Export the labels above, or undo the last one.</p>
  </section>
  <div class="actions">
    <button id="skip" aria-keyshortcuts="n s"><kbd>n</kbd> Skip</button>
    <button id="undo" aria-keyshortcuts="u Control+Z"><kbd>u</kbd> Undo last label</button>
  </div>
  <p id="status" role="status"></p>
</main>
<footer>
  Keys: <kbd>1</kbd> left better, <kbd>2</kbd> right better, <kbd>=</kbd> tie;
  <kbd>1</kbd>–<kbd>5</kbd> rating; <kbd>n</kbd> or <kbd>s</kbd> skip;
  <kbd>u</kbd> or <kbd>Ctrl</kbd>+<kbd>Z</kbd> undo.
</footer>
<script nonce="{{nonce}}">
"use strict";
const $ = (id) => document.getElementById(id);
const rater = new URLSearchParams(location.search).get("rater") || document.body.dataset.rater;
let state = null;    // the server's view: {rater, item, done, total, last_key}
let key = null;      // this item's idempotency key: kept across retries, new for each item shown
let busy = false;
let skipped = [];    // skipped item ids, oldest first

function newKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function say(text, error = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", error);
}

async function call(method, path, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const reply = await fetch(path, init);
  const data = await reply.json().catch(() => ({}));
  if (!reply.ok) throw new Error(data.error || `${reply.status} ${reply.statusText}`);
  return data;
}

function show(next) {
  state = next;
  key = newKey();
  const item = next.item;
  $("rater").textContent = next.rater;
  $("progress").textContent = `${next.done} / ${next.total}`;
  $("prompt-box").hidden = !item;
  $("pairwise").hidden = !item || item.kind !== "pairwise";
  $("likert").hidden = !item || item.kind !== "likert";
  $("finished").hidden = Boolean(item);
  $("skip").disabled = !item;
  $("undo").disabled = !next.last_key;
  if (!item) return;
  $("item-id").textContent = `(${item.id})`;
  $("prompt").textContent = item.prompt;
  if (item.kind === "pairwise") {
    $("left").textContent = item.left;
    $("right").textContent = item.right;
  } else {
    $("output").textContent = item.output;
    $("rubric").textContent = item.rubric;
  }
}

function load(itemId) {
  const who = `rater=${encodeURIComponent(rater)}`;
  const path = itemId === undefined
    ? `/api/next?${who}` + skipped.map((i) => `&skip=${encodeURIComponent(i)}`).join("")
    : `/api/items/${encodeURIComponent(itemId)}?${who}`;
  return call("GET", path).then(show);
}

async function run(action) {  // one request at a time; a failed submission keeps its key for the retry
  if (busy) return;
  busy = true;
  try { await action(); } catch (err) { say(err.message, true); } finally { busy = false; }
}

function submit(fields) {
  const item = state && state.item;
  if (!item) return;
  run(async () => {
    const body = { key, rater, item_id: item.id, ...fields };
    if (item.kind === "pairwise") body.shown_left = item.shown_left;
    await call("POST", "/api/labels", body);
    skipped = skipped.filter((i) => i !== item.id);
    say(`Saved ${item.id}.`);
    await load();
  });
}

function skip() {
  const item = state && state.item;
  if (!item) return;
  skipped = skipped.filter((i) => i !== item.id).concat([item.id]);
  run(async () => { say(`Skipped ${item.id}.`); await load(); });
}

function undo() {
  if (!state || !state.last_key) return;
  run(async () => {
    const reply = await call("POST", "/api/undo", { rater, key: state.last_key });
    say(`Undid the label of ${reply.undone.item_id}.`);
    await load(reply.undone.item_id);
  });
}

document.querySelectorAll("[data-choice]").forEach((b) =>
  b.addEventListener("click", () => submit({ choice: b.dataset.choice })));
document.querySelectorAll("[data-rating]").forEach((b) =>
  b.addEventListener("click", () => submit({ rating: Number(b.dataset.rating) })));
$("skip").addEventListener("click", skip);
$("undo").addEventListener("click", undo);

document.addEventListener("keydown", (e) => {
  if (e.repeat || e.target.closest("input, textarea, select")) return;
  const plain = !(e.ctrlKey || e.metaKey || e.altKey);
  if ((plain && e.key === "u") || ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "z" && !e.shiftKey)) {
    e.preventDefault();
    undo();
    return;
  }
  const item = state && state.item;
  if (!plain || !item) return;
  const choice = { "1": "left", "2": "right", "=": "tie" }[e.key];
  if (e.key === "n" || e.key === "s") skip();
  else if (item.kind === "pairwise" && choice) submit({ choice });
  else if (item.kind === "likert" && /^[1-5]$/.test(e.key)) submit({ rating: Number(e.key) });
  else return;
  e.preventDefault();
});

run(() => load());
</script>
</body>
</html>
"""
