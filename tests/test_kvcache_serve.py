"""kvcache.serve: the OpenAI-compatible server, driven by the real ``openai`` client over loopback.

Reference: the same requests run offline through a fresh ``LLMEngine`` with the same configuration
(``generate`` / ``chat``), and the OpenAI semantics restated in :func:`final_text` (the end-of-turn
token is not content, the text ends before the first stop string). Tolerance: exact text and token
counts. The tiny model runs in float64, so that the batch layouts of the server and the offline run
(which differ) change logits by ~1e-15 and can never flip a greedy argmax; sampled requests carry a
seed (each gets its own generator, so its samples do not depend on the batch). One test runs the real
SmolLM2-135M-Instruct (fp32) through chat completions. Hand-worked examples check the streaming
hold-back of stop strings and of incomplete UTF-8 characters.
"""

import importlib
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from gpt import GPT, GPTConfig
from kvcache import LLMEngine, Output, SamplingParams
from kvcache.serve.api import DEFAULT_MAX_TOKENS, ChoiceText

openai = pytest.importorskip("openai")
serve = pytest.importorskip("kvcache.serve.app")  # needs the serve extra (starlette, uvicorn)

pytestmark = pytest.mark.usefixtures("one_thread")

CONTEXT = 512
ENGINE = dict(block_size=16, num_blocks=128, max_num_seqs=16)
HI = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hi to Ada."}]


class SlowGPT(GPT):
    """The tiny model with a pause in every forward: requests stay in flight long enough to cut them."""

    def forward(self, *args, **kwargs):
        time.sleep(0.02)
        return super().forward(*args, **kwargs)


def tiny_config() -> GPTConfig:
    return GPTConfig.llama(vocab_size=49152, block_size=CONTEXT, n_layer=2, n_head=4, n_kv_head=2, n_embd=64)


@pytest.fixture(scope="module")
def tok(smollm2):
    return smollm2[1]  # SmolLM2's tokenizer: byte-level BPE with its ChatML template, eos <|im_end|>


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return GPT(tiny_config()).double().eval()


@pytest.fixture(scope="module")
def slow(tiny):
    model = SlowGPT(tiny_config()).double().eval()
    model.load_state_dict(tiny.state_dict())
    return model


def start(model, tok, shutdown_timeout=5.0, **engine_kw):
    engine = LLMEngine(model, tokenizer=tok, **{**ENGINE, **engine_kw})
    server = serve.Server(serve.build_app(engine, "tiny"), shutdown_timeout=shutdown_timeout).start()
    return server, engine


def client(server, **kw):
    return openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, **kw)


@pytest.fixture(scope="module")
def served(tiny, tok):
    server, engine = start(tiny, tok)
    yield server, client(server), engine
    server.stop()


def engine_state(server):
    """What an accepted request would change: pending work, free blocks, step counters, requests taken."""
    loop = server.app.state.engine_loop
    seen = loop.call(lambda e: (e.has_unfinished(), e.block_manager.num_free_blocks, dict(e.stats)))
    return seen, dict(loop.stats)


def offline(model, tok, prompts, params, chat=False, **engine_kw) -> list[Output]:
    engine = LLMEngine(model, tokenizer=tok, **{**ENGINE, **engine_kw})
    if chat:
        return engine.chat(prompts, params, use_tqdm=False)
    return engine.generate(prompts, params, use_tqdm=False)


def final_text(out: Output, tok, stop=()) -> str:
    """OpenAI's text for an engine Output: no end-of-turn token, cut before the first stop string."""
    ids = out.token_ids
    if out.finish_reason == "stop" and ids and ids[-1] == tok.eos_id:
        ids = ids[:-1]
    text = tok.decode(ids)
    cuts = [text.find(s) for s in stop if s in text]
    return text[: min(cuts)] if cuts else text


def ask(c, stream: bool, chat: bool, model="tiny", **kw) -> dict:
    """One request; texts and finish reasons by choice index, and usage, streamed or not."""
    api = c.chat.completions if chat else c.completions
    kw["model"] = model
    if not stream:
        r = api.create(**kw)
        texts = [ch.message.content if chat else ch.text for ch in r.choices]
        return dict(texts=texts, finish=[ch.finish_reason for ch in r.choices], usage=r.usage, id=r.id)
    texts, finish, usage, ids = {}, {}, None, set()
    for chunk in api.create(stream=True, stream_options={"include_usage": True}, **kw):
        ids.add(chunk.id)
        if chunk.usage is not None:
            usage = chunk.usage
        for ch in chunk.choices:
            piece = (ch.delta.content or "") if chat else ch.text
            texts[ch.index] = texts.get(ch.index, "") + piece
            if ch.finish_reason is not None:
                finish[ch.index] = ch.finish_reason
    assert len(ids) == 1, "every chunk of a stream carries the request's id"
    n = len(texts)
    return dict(texts=[texts[i] for i in range(n)], finish=[finish[i] for i in range(n)], usage=usage)


def usage_of(r) -> tuple[int, int, int]:
    u = r["usage"]
    return u.prompt_tokens, u.completion_tokens, u.total_tokens


# -- hand-worked examples of the streaming text -----------------------------------------------------------


def feed(tok, ids, params, finish_reason) -> list[str]:
    """Stream ``ids`` one token at a time through a ChoiceText; the deltas it hands out."""
    choice, deltas = ChoiceText(tok, params), []
    for k in range(1, len(ids) + 1):
        done = k == len(ids)
        reason = finish_reason if done else None
        out = Output("r", [1], ids[:k], done, finish_reason=reason, text=tok.decode(ids[:k]))
        deltas.append(choice.update(out))
    return deltas


def test_stop_string_is_held_back_and_cut(tok):
    ids = tok.encode("Hello world")  # "Hello", " world": the engine stops at " world", which completes "o w"
    deltas = feed(tok, ids, SamplingParams(stop=("o w",)), "stop")
    assert deltas == ["Hel", "l"]  # "Hello" streams as "Hel" (2 = len("o w") - 1 held back), then the cut


def test_incomplete_utf8_waits_for_its_last_byte(tok):
    ids = tok.encode("a 😀 b")
    assert "\ufffd" in tok.decode(ids[:-2]) or "\ufffd" in tok.decode(ids[:-3]), "the emoji spans tokens"
    deltas = feed(tok, ids, SamplingParams(), "length")
    assert "".join(deltas) == "a 😀 b"
    assert not any("\ufffd" in d for d in deltas)


def test_end_of_turn_token_is_counted_but_not_text(tok):
    ids = [*tok.encode("Hi there"), tok.eos_id]
    choice = ChoiceText(tok, SamplingParams(stop_token_ids=(tok.eos_id,)))
    out = Output("r", [1], ids, True, finish_reason="stop", text=tok.decode(ids))
    assert choice.update(out) == "Hi there"
    assert choice.num_tokens == len(ids)


# -- the live server ---------------------------------------------------------------------------------------


def test_models_lists_the_served_model(served):
    _, c, _ = served
    (model,) = c.models.list().data
    assert model.id == "tiny" and model.object == "model" and model.max_model_len == CONTEXT


def test_an_idle_server_sleeps(served):
    _, c, _ = served
    c.completions.create(model="tiny", prompt="wake up", max_tokens=2)
    t0, cpu0 = time.monotonic(), time.process_time()
    time.sleep(1.0)
    busy = (time.process_time() - cpu0) / (time.monotonic() - t0)
    assert busy < 0.1, f"the idle server used {busy:.0%} of a core"  # the engine thread blocks on its inbox


@pytest.mark.parametrize("stream", [False, True])
def test_completions_match_the_offline_engine(served, tiny, tok, stream):
    _, c, _ = served
    prompts = ["The capital of France", tok.encode("Once upon a time")]
    params = SamplingParams(temperature=0.0, max_tokens=12, stop_token_ids=(tok.eos_id,))
    refs = offline(tiny, tok, prompts, params)
    for prompt, ref in zip(prompts, refs, strict=True):
        r = ask(c, stream, chat=False, prompt=prompt, max_tokens=12, temperature=0)
        assert r["texts"] == [final_text(ref, tok)]
        assert r["finish"] == [ref.finish_reason] == ["length"]
        n_prompt = len(tok.encode(prompt)) if isinstance(prompt, str) else len(prompt)
        assert usage_of(r) == (n_prompt, 12, n_prompt + 12)


@pytest.mark.parametrize("stream", [False, True])
def test_chat_matches_the_offline_engine(served, tiny, tok, stream):
    _, c, _ = served
    (ref,) = offline(tiny, tok, [HI], SamplingParams(temperature=0.0, max_tokens=10), chat=True)
    r = ask(c, stream, chat=True, messages=HI, max_tokens=10, temperature=0)
    assert r["texts"] == [final_text(ref, tok)]
    assert r["finish"] == [ref.finish_reason]
    n_prompt = len(tok.apply_chat_template(HI, tokenize=True))
    assert usage_of(r) == (n_prompt, len(ref.token_ids), n_prompt + len(ref.token_ids))


@pytest.mark.parametrize("stream", [False, True])
def test_stop_strings_end_the_text_before_them(served, tiny, tok, stream):
    _, c, _ = served
    prompt = "Stop me if you can"
    (ref,) = offline(tiny, tok, [prompt], SamplingParams(temperature=0.0, max_tokens=24))
    full = ref.text
    stop = full[len(full) // 2 : len(full) // 2 + 4]  # four characters from the middle of the output
    expected = full[: full.find(stop)]
    r = ask(c, stream, chat=False, prompt=prompt, max_tokens=24, temperature=0, stop=[stop, "never§"])
    assert r["texts"] == [expected] and r["finish"] == ["stop"]
    (cut,) = offline(tiny, tok, [prompt], SamplingParams(temperature=0.0, max_tokens=24, stop=(stop,)))
    assert usage_of(r)[1] == len(cut.token_ids) < 24  # generated tokens count, stop string included


def test_default_max_tokens_is_capped_to_the_context(served, tiny, tok):
    _, c, _ = served
    short = tok.encode("Tell me everything")
    long = torch.randint(3, 40000, (CONTEXT - 5,), generator=torch.Generator().manual_seed(0)).tolist()
    for prompt, n in ((short, DEFAULT_MAX_TOKENS), (long, 5)):
        params = SamplingParams(temperature=0.0, max_tokens=n, stop_token_ids=(tok.eos_id,))
        (ref,) = offline(tiny, tok, [prompt], params)
        r = ask(c, False, chat=False, prompt=prompt, temperature=0)
        assert r["texts"] == [final_text(ref, tok)] and usage_of(r)[1] == len(ref.token_ids) == n


def test_sampling_follows_seed_temperature_and_top_p(served, tiny, tok):
    _, c, _ = served
    prompt = "Roll the dice"

    def text(**kw):
        return ask(c, False, chat=False, prompt=prompt, max_tokens=8, **kw)["texts"][0]

    sampled = dict(temperature=0.8, top_p=0.9, seed=7)
    ref = offline(tiny, tok, [prompt], SamplingParams(max_tokens=8, stop_token_ids=(tok.eos_id,), **sampled))
    assert text(**sampled) == text(**sampled) == final_text(ref[0], tok)  # reproducible, as offline
    assert text(**{**sampled, "seed": 8}) != text(**sampled)  # another seed, another text
    assert text(**{**sampled, "top_p": 0.3}) != text(**{**sampled, "top_p": 1.0})  # top_p reaches the sampler
    assert text(**{**sampled, "temperature": 1.5}) != text(**sampled)
    greedy = offline(tiny, tok, [prompt], SamplingParams(temperature=0.0, max_tokens=8, stop_token_ids=(2,)))
    assert text(temperature=0, seed=3) == final_text(greedy[0], tok)


@pytest.mark.parametrize("stream", [False, True])
def test_n_samples_per_request(served, tiny, tok, stream):
    server, c, _ = served
    kw = dict(temperature=1.0, seed=11, max_tokens=6)
    refs = offline(tiny, tok, [HI], SamplingParams(n=3, **kw), chat=True)
    before = engine_state(server)[1]["requests"]
    r = ask(c, stream, chat=True, messages=HI, n=3, **kw)
    assert engine_state(server)[1]["requests"] == before + 1  # one request, forked in the engine
    assert r["texts"] == [final_text(o, tok) for o in refs]
    assert len(set(r["texts"])) == 3, "the three samples differ"
    n_prompt = len(tok.apply_chat_template(HI, tokenize=True))
    completion = sum(len(o.token_ids) for o in refs)
    assert usage_of(r) == (n_prompt, completion, n_prompt + completion)


BAD = [  # (endpoint, fields, status, param)
    ("completions", dict(model="other", prompt="hi"), 404, "model"),
    ("completions", dict(prompt="hi", max_tokens=CONTEXT), 400, "max_tokens"),
    ("completions", dict(prompt="hi", max_tokens=0), 400, "max_tokens"),
    ("completions", dict(prompt="hi", temperature=-0.5), 400, "temperature"),
    ("completions", dict(prompt="hi", top_p=0.0), 400, "top_p"),
    ("completions", dict(prompt="hi", top_p=1.5), 400, "top_p"),
    ("completions", dict(prompt="hi", n=0), 400, "n"),
    ("completions", dict(prompt=""), 400, "prompt"),
    ("completions", dict(prompt=[]), 400, "prompt"),
    ("completions", dict(prompt=[5, 10**6]), 400, "prompt"),  # refused by the engine itself
    ("completions", dict(prompt={"text": "hi"}), 422, "prompt"),
    ("completions", dict(prompt="hi", stop=[""]), 400, "stop"),
    ("completions", dict(prompt="hi", stop=["a", "b", "c", "d", "e"]), 400, "stop"),
    ("completions", dict(prompt="hi", stop=5), 422, "stop"),
    ("completions", dict(prompt="hi", stream_options={"include_usage": True}), 400, "stream_options"),
    ("completions", dict(prompt="hi", logprobs=2), 400, "logprobs"),
    ("completions", dict(prompt="hi", temperature="hot"), 422, "temperature"),
    ("chat", dict(messages=[{"role": "robot", "content": "hi"}]), 400, "messages"),
    ("chat", dict(messages=[{"role": "user"}]), 400, "messages"),
    ("chat", dict(messages=[]), 400, "messages"),
    ("chat", dict(messages="hi"), 422, "messages"),
    ("chat", dict(messages=HI, max_tokens=CONTEXT - 20), 400, "max_tokens"),
]


@pytest.mark.parametrize("endpoint, fields, status, param", BAD)
def test_bad_requests_are_openai_errors_and_change_nothing(served, endpoint, fields, status, param):
    server, c, _ = served
    before = engine_state(server)
    api = c.chat.completions if endpoint == "chat" else c.completions
    fields = {"model": "tiny", **fields}
    with pytest.raises(openai.APIStatusError) as info:
        api.create(**fields)
    err = info.value
    assert err.status_code == status
    body = err.response.json()["error"]
    assert body["param"] == param and body["message"] and body["type"] == "invalid_request_error"
    assert set(body) == {"message", "type", "param", "code"}
    assert engine_state(server) == before


def post(server, path, data: bytes, method="POST"):
    req = urllib.request.Request(server.url + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_unparseable_bodies_and_unknown_routes(served):
    server, _, _ = served
    before = engine_state(server)
    for path, data, status in [
        ("/completions", b"{not json", 422),
        ("/completions", b"[1, 2]", 422),
        ("/chat/completions", b'{"model": "tiny"}', 422),
        ("/embeddings", b"{}", 404),
    ]:
        code, body = post(server, path, data)
        assert code == status and set(body["error"]) == {"message", "type", "param", "code"}
    assert post(server, "/models", None, method="DELETE")[0] == 405
    assert engine_state(server) == before


def wait_for(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_client_that_disconnects_has_its_request_aborted(slow, tok):
    server, _ = start(slow, tok)
    try:
        loop = server.app.state.engine_loop
        free = loop.call(lambda e: e.block_manager.num_free_blocks)
        c = client(server)
        stream = c.completions.create(model="tiny", prompt="Go on and on", max_tokens=400, stream=True)
        for _ in zip(range(3), stream, strict=False):  # three tokens in, the client goes away
            pass
        stream.close()
        wait_for(lambda: loop.stats["aborted"] == 1)
        with pytest.raises(openai.APITimeoutError):  # a non-streaming client that gives up
            client(server, timeout=0.5).completions.create(model="tiny", prompt="Long", max_tokens=400)
        wait_for(lambda: loop.stats["aborted"] == 2)

        def check(e):
            e.block_manager.check_invariants()
            return e.has_unfinished(), e.block_manager.num_free_blocks

        assert loop.call(check) == (False, free)  # every block is back (prefix-cached ones free too)
        assert loop.stats["finished"] == 0
    finally:
        server.stop()


def run_clients(server, jobs, workers):
    """Stream every job from its own thread and client; results in job order (bounded in time)."""

    def one(job):
        chat, kw = job
        return ask(client(server, timeout=120), True, chat, **kw)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(one, job) for job in jobs]
        return [f.result(timeout=180) for f in futures]


def workload(tok, count, seed=0):
    """Mixed chat and completion requests, greedy and seeded sampling; with their offline params."""
    g = torch.Generator().manual_seed(seed)
    jobs, refs = [], []
    for i in range(count):
        n_out = int(torch.randint(4, 21, (1,), generator=g))
        sampling = dict(temperature=0.0) if i % 2 else dict(temperature=0.9, top_p=0.95, seed=i)
        words = " ".join(f"w{int(w)}" for w in torch.randint(0, 999, (1 + i % 7,), generator=g))
        chat = i % 3 == 0
        key = dict(messages=[{"role": "user", "content": words}]) if chat else dict(prompt=words)
        jobs.append((chat, dict(max_tokens=n_out, **key, **sampling)))
        refs.append((chat, words, SamplingParams(max_tokens=n_out, stop_token_ids=(tok.eos_id,), **sampling)))
    return jobs, refs


def expected(model, tok, refs, **engine_kw):
    """Offline outputs of the workload in its order (its completions through one engine, chats another)."""
    out = {}
    for chat in (False, True):
        picked = [(i, w, p) for i, (c, w, p) in enumerate(refs) if c == chat]
        prompts = [[{"role": "user", "content": w}] if chat else w for _, w, _ in picked]
        outs = offline(model, tok, prompts, [p for _, _, p in picked], chat=chat, **engine_kw)
        out |= {i: o for (i, _, _), o in zip(picked, outs, strict=True)}
    return [out[i] for i in range(len(refs))]


def test_64_concurrent_streaming_clients_match_offline(served, tiny, tok):
    server, _, _ = served
    jobs, refs = workload(tok, 64)
    loop = server.app.state.engine_loop
    before = loop.stats["requests"]
    results = run_clients(server, jobs, workers=64)
    outs = expected(tiny, tok, refs)
    assert [r["texts"][0] for r in results] == [final_text(o, tok) for o in outs]
    assert [r["finish"][0] for r in results] == [o.finish_reason for o in outs]
    assert [usage_of(r)[1] for r in results] == [len(o.token_ids) for o in outs]
    assert loop.stats["requests"] == before + 64
    assert loop.call(lambda e: e.stats["max_running"]) > 1  # requests of different clients shared a batch


def test_a_tight_kv_pool_queues_requests_instead_of_failing(tiny, tok):
    pool = dict(block_size=4, num_blocks=24)  # 96 token slots: two or three requests at a time
    server, engine = start(tiny, tok, **pool)
    try:
        jobs, refs = workload(tok, 12, seed=1)
        jobs = [(chat, {**kw, "max_tokens": 30}) for chat, kw in jobs]
        refs = [(chat, w, SamplingParams(**{**vars(p), "max_tokens": 30})) for chat, w, p in refs]
        results = run_clients(server, jobs, workers=12)
        loop = server.app.state.engine_loop
        ran = loop.call(lambda e: (e.stats["max_running"], e.block_manager.num_free_blocks))
    finally:
        server.stop()
    outs = expected(tiny, tok, refs)  # the default roomy pool
    assert [r["texts"][0] for r in results] == [final_text(o, tok) for o in outs]
    assert ran == (ran[0], pool["num_blocks"]) and ran[0] < len(jobs)  # it queued; all blocks came back
    engine.block_manager.check_invariants()


def stream_in_background(server, count, max_tokens):
    """Start ``count`` streams; returns (threads, results: 'done' / 'cut' per stream, first-chunk events)."""
    results, started = [None] * count, [threading.Event() for _ in range(count)]

    def run(i):
        try:
            chunks = client(server, timeout=60).completions.create(
                model="tiny", prompt=f"stream {i}", max_tokens=max_tokens, stream=True
            )
            finish = None
            for chunk in chunks:
                started[i].set()
                finish = chunk.choices[0].finish_reason if chunk.choices else finish
            results[i] = finish or "cut"
        except (openai.APIError, openai.APIConnectionError):
            results[i] = "cut"
        finally:
            started[i].set()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(count)]
    for t in threads:
        t.start()
    for e in started:
        assert e.wait(30)
    return threads, results


@pytest.mark.parametrize("shutdown_timeout, max_tokens, outcome", [(30.0, 12, "length"), (0.2, 400, "cut")])
def test_shutdown_drains_or_cancels_in_flight_requests(slow, tok, shutdown_timeout, max_tokens, outcome):
    threads_before = set(threading.enumerate())
    server, engine = start(slow, tok, shutdown_timeout=shutdown_timeout)
    free = engine.num_blocks
    threads, results = stream_in_background(server, 4, max_tokens)
    t0 = time.monotonic()
    server.stop(timeout=60)
    assert time.monotonic() - t0 < shutdown_timeout + 10
    for t in threads:
        t.join(30)
        assert not t.is_alive(), "a client hung"
    assert results == [outcome] * 4  # drained: every stream finished; cancelled: every stream was cut
    assert set(threading.enumerate()) <= threads_before  # the server's and the engine's threads ended
    assert not engine.has_unfinished()  # the engine thread is gone: safe to read here
    engine.block_manager.check_invariants()
    assert engine.block_manager.num_free_blocks == free


def test_serving_modules_import_no_web_stack_until_serve():
    code = (
        "import sys, kvcache, kvcache.serve.api, kvcache.serve.loop\n"
        "assert not {'starlette', 'uvicorn', 'quant'} & set(sys.modules), sorted(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_a_missing_serve_extra_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    monkeypatch.delitem(sys.modules, "kvcache.serve.app")
    with pytest.raises(ImportError, match=r"pip install 'llm-course\[serve\]'"):
        importlib.import_module("kvcache.serve.app")


def test_the_port_accepts_connections_before_the_server_runs(tiny, tok):
    """The CLI prints the URL before uvicorn's loop starts: a client that connects in between must be
    queued by the kernel, not refused (the socket listens from construction on)."""
    import socket

    server = serve.Server(serve.build_app(LLMEngine(tiny, tokenizer=tok, **ENGINE), "tiny"))
    try:
        with socket.create_connection((server.host, server.port), timeout=5):
            pass  # ECONNREFUSED here if the socket were only bound
    finally:
        server.sock.close()


def test_cli_serves_a_gguf_on_a_free_port_and_stops_on_sigint(tiny, tok, tmp_path):
    from quant import export_gguf

    path = export_gguf(tiny, tok, tmp_path / "tiny.gguf", qtype="F32")  # reads a float32 copy
    cmd = [sys.executable, "-m", "kvcache.serve", "--model", str(path), "--port", "0", "--num-blocks", "32"]
    cmd += ["--served-model-name", "tiny", "--quant", "int8", "--prompt-lookup", "2", "--threads", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = ""
        while "http://" not in line:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "the server exited before it printed its address"
        url = line[line.index("http://") :].split()[0]
        c = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=60)
        r = c.chat.completions.create(model="tiny", messages=HI, max_tokens=5, temperature=0)
        assert r.usage.completion_tokens == 5 and r.choices[0].finish_reason == "length"
        proc.send_signal(2)  # SIGINT, as Ctrl-C
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_real_smollm2_chat_matches_the_offline_engine(smollm2):
    model, tok = smollm2  # not modified: the engine only reads the model
    messages = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    pool = dict(block_size=16, num_blocks=16)
    (ref,) = LLMEngine(model, tokenizer=tok, **pool).chat(
        [messages], SamplingParams(temperature=0.0, max_tokens=32), use_tqdm=False
    )
    assert ref.finish_reason == "stop" and ref.token_ids[-1] == tok.eos_id  # a short answer, then <|im_end|>
    engine = LLMEngine(model, tokenizer=tok, **pool)
    with serve.Server(serve.build_app(engine, "smollm2")) as server:
        c = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0)
        for stream in (False, True):
            r = ask(c, stream, chat=True, model="smollm2", messages=messages, max_tokens=32, temperature=0)
            assert r["texts"] == [tok.decode(ref.token_ids[:-1])] and "<|im_end|>" not in r["texts"][0]
            assert r["finish"] == ["stop"]
            assert usage_of(r)[:2] == (len(engine.chat_ids(messages)), len(ref.token_ids))
