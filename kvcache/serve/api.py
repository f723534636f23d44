"""The OpenAI HTTP protocol over ``LLMEngine``: a request body checked into ``SamplingParams``, and the
engine's ``Output``s shaped into completion, chat and streaming-chunk replies.

Teaches what an OpenAI-compatible server promises beyond generating tokens. ``kvcache.serve`` moves
bytes; this module, which needs no web framework, decides what they mean:

- Every field is checked once, here, before anything reaches the engine. A body that is not a JSON
  object, a missing field or a field of the wrong JSON type is a schema error (422, FastAPI's answer);
  a well-typed value that cannot be served is 400 (negative temperature, top_p outside (0, 1], n < 1,
  prompt + max_tokens past the context or the KV pool, an empty prompt, bad stop strings, malformed
  messages); an unknown model is 404 ``model_not_found``, as OpenAI answers. Errors are OpenAI's
  ``{"error": {"message", "type", "param", "code"}}``.
- ``max_tokens`` defaults to :data:`DEFAULT_MAX_TOKENS` (256), capped to what the prompt leaves of the
  context and of the KV pool, not OpenAI's "up to the context": a forgotten ``max_tokens`` should not
  hold a CPU for 8192 tokens.
- Generation stops at the tokenizer's end-of-turn token (``eos_id``, SmolLM2's ``<|im_end|>``) unless
  ``ignore_eos`` (a vLLM extension); the token counts in ``usage`` but is not in the text.
- A stop string ends the text before its first occurrence (the engine stops at the token completing
  it). While streaming, the last ``len(longest stop) - 1`` characters wait until they cannot start one,
  and a trailing incomplete UTF-8 character (U+FFFD) waits for its next token.
- ``usage``: ``prompt_tokens`` once per request, ``completion_tokens`` summed over the ``n`` choices.

Reference: the OpenAI API reference (``/v1/completions``, ``/v1/chat/completions``, ``/v1/models``,
``stream_options.include_usage``, error objects); vLLM ``entrypoints/openai/protocol.py``,
``serving_completion.py``, ``serving_chat.py`` (incremental detokenization, stop-string hold-back).
"""

import time
from collections.abc import Callable
from dataclasses import dataclass

from kvcache.request import Output, SamplingParams

DEFAULT_MAX_TOKENS = 256
MAX_STOP_STRINGS = 4  # OpenAI's limit
MAX_N = 64
# Fields of OpenAI's schema this server does not implement: rejected (400) unless null or neutral,
# rather than silently ignored.
UNSUPPORTED = {
    "logprobs": (None, False, 0),
    "top_logprobs": (None, 0),
    "echo": (None, False),
    "suffix": (None, ""),
    "best_of": (None, 1),
    "logit_bias": (None,),
    "frequency_penalty": (None, 0),
    "presence_penalty": (None, 0),
    "tools": (None,),
    "functions": (None,),
    "tool_choice": (None, "none"),
    "response_format": (None, {"type": "text"}),
}
CHAT_ROLE_ALIASES = {"developer": "system"}  # OpenAI's newer name for the system role


class APIError(Exception):
    """An OpenAI-style error: HTTP ``status`` and ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(self, message: str, param: str | None = None, status: int = 400, code: str | None = None):
        super().__init__(message)
        self.message, self.param, self.status, self.code = message, param, status, code

    def body(self) -> dict:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class ServedModel:
    """What the protocol needs to know of the engine: limits, the tokenizer and its chat template."""

    name: str
    max_model_len: int
    block_size: int
    num_blocks: int
    tokenizer: object
    chat_ids: Callable[[list[dict]], list[int]]  # LLMEngine.chat_ids: reads only the tokenizer
    created: int = 0

    def card(self) -> dict:
        return {
            "id": self.name,
            "object": "model",
            "created": self.created,
            "owned_by": "llm-course",
            "max_model_len": self.max_model_len,
        }

    def max_tokens_room(self, prompt_len: int) -> int:
        """Most tokens a prompt of ``prompt_len`` can be given: the context and (one sequence) the pool."""
        return min(self.max_model_len, self.num_blocks * self.block_size) - prompt_len


@dataclass
class Job:
    """A checked request, ready for the engine."""

    endpoint: str  # "completion" | "chat"
    prompt_ids: list[int]
    params: SamplingParams
    stream: bool
    include_usage: bool


# -- request checks -----------------------------------------------------------------------------------


def _field(body: dict, name: str, types: tuple, default=None, what: str = ""):
    """``body[name]`` (or ``default`` when absent or null), 422 when it has the wrong JSON type."""
    value = body.get(name)
    if value is None:
        return default
    if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
        kinds = what or " or ".join(t.__name__ for t in types)
        raise APIError(f"{name} must be {kinds}, got {value!r}", name, status=422)
    return value


def _check_body(body, model: ServedModel) -> dict:
    if not isinstance(body, dict):
        raise APIError(f"the request body must be a JSON object, got {type(body).__name__}", status=422)
    name = _field(body, "model", (str,), default=model.name)
    if name != model.name:
        message = f"the model {name!r} does not exist; this server serves {model.name!r}"
        raise APIError(message, "model", status=404, code="model_not_found")
    for key, neutral in UNSUPPORTED.items():
        if key in body and not any(body[key] == v and type(body[key]) is type(v) for v in neutral):
            raise APIError(f"{key}={body[key]!r} is not supported by this server", key)
    return body


def _stop_strings(body: dict) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise APIError(f"stop must be a string or a list of strings, got {stop!r}", "stop", status=422)
    if len(stop) > MAX_STOP_STRINGS or not all(stop):
        raise APIError(f"stop takes up to {MAX_STOP_STRINGS} non-empty strings, got {stop!r}", "stop")
    return tuple(dict.fromkeys(stop))


def _sampling(body: dict, prompt_len: int, model: ServedModel, stop_ids: tuple[int, ...]) -> SamplingParams:
    """SamplingParams from the body's sampling fields (the same for both endpoints)."""
    number = (int, float)
    temperature = _field(body, "temperature", number, 1.0, "a number")
    if temperature < 0:
        raise APIError(f"temperature must be >= 0 (0 is greedy), got {temperature}", "temperature")
    top_p = _field(body, "top_p", number, 1.0, "a number")
    if not 0 < top_p <= 1:
        raise APIError(f"top_p must be in (0, 1], got {top_p}", "top_p")
    top_k = _field(body, "top_k", (int,), -1)  # vLLM's extension; -1 (or absent) keeps every token
    if top_k == 0 or top_k < -1:
        raise APIError(f"top_k must be a positive int, or -1 for all tokens, got {top_k}", "top_k")
    n = _field(body, "n", (int,), 1)
    if not 1 <= n <= MAX_N:
        raise APIError(f"n must be between 1 and {MAX_N}, got {n}", "n")
    seed = _field(body, "seed", (int,))
    room = model.max_tokens_room(prompt_len)
    if room < 1:
        message = f"the prompt of {prompt_len} tokens leaves no room to generate in {model.max_model_len}"
        raise APIError(message + " tokens of context and KV cache; shorten the prompt", "prompt")
    key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _field(body, key, (int,), min(DEFAULT_MAX_TOKENS, room))
    if max_tokens < 1:
        raise APIError(f"{key} must be >= 1, got {max_tokens}", key)
    asked = f"the prompt ({prompt_len} tokens) plus {key}={max_tokens}"
    if prompt_len + max_tokens > model.max_model_len:
        raise APIError(f"{asked} is more than the context of {model.max_model_len} tokens; lower {key}", key)
    if max_tokens > room:
        pool = model.num_blocks * model.block_size
        raise APIError(f"{asked} is more than the server's KV pool of {pool} tokens; lower {key}", key)
    if _field(body, "ignore_eos", (bool,), False):
        stop_ids = ()
    return SamplingParams(
        temperature=float(temperature),
        top_k=None if top_k == -1 else top_k,
        top_p=None if top_p == 1 else float(top_p),
        max_tokens=max_tokens,
        stop_token_ids=stop_ids,
        stop=_stop_strings(body),
        seed=seed,
        n=n,
    )


def _streaming(body: dict) -> tuple[bool, bool]:
    stream = _field(body, "stream", (bool,), False)
    options = _field(body, "stream_options", (dict,), None, "an object")
    if options is not None and not stream:
        raise APIError("stream_options is only allowed with stream=true", "stream_options")
    include_usage = _field(options or {}, "include_usage", (bool,), False)
    return stream, include_usage


def _eos(model: ServedModel) -> tuple[int, ...]:
    eos = getattr(model.tokenizer, "eos_id", None)
    return () if eos is None else (eos,)


def parse_completion(body, model: ServedModel) -> Job:
    """A ``/v1/completions`` body -> :class:`Job` (``prompt``: a string or a list of token ids)."""
    body = _check_body(body, model)
    if "prompt" not in body:
        raise APIError("prompt is required (a string or a list of token ids)", "prompt", status=422)
    prompt = body["prompt"]
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]  # a batch of one prompt
    is_ids = isinstance(prompt, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt)
    if isinstance(prompt, str) and prompt:
        try:
            ids = model.tokenizer.encode(prompt)
        except ValueError as err:  # e.g. special-token text, which the engine's tokenizer refuses
            raise APIError(str(err), "prompt") from None
    elif is_ids and prompt:
        ids = list(prompt)  # the engine checks that they are in the vocabulary
    elif prompt == "" or is_ids:
        raise APIError("the prompt is empty; give at least one token", "prompt")
    elif isinstance(prompt, list) and all(isinstance(p, (str, list)) for p in prompt):
        message = f"a batch of {len(prompt)} prompts is not supported; send one request per prompt"
        raise APIError(message + " (the engine batches concurrent requests anyway)", "prompt")
    else:
        raise APIError(f"prompt must be a string or a list of token ids, got {prompt!r}", "prompt", 422)
    params = _sampling(body, len(ids), model, _eos(model))
    return Job("completion", ids, params, *_streaming(body))


def _message(i: int, m) -> dict:
    """One chat message with its content as a str (OpenAI also sends a list of text parts)."""
    if not isinstance(m, dict):
        raise APIError(f"messages[{i}] must be an object with role and content, got {m!r}", "messages")
    content = m.get("content")
    if isinstance(content, list):
        text = [p.get("text") if isinstance(p, dict) and p.get("type") == "text" else None for p in content]
        if not all(isinstance(t, str) for t in text):
            raise APIError(f"messages[{i}].content: only text parts are served, got {content!r}", "messages")
        content = "".join(text)
    role = m.get("role")
    return {"role": CHAT_ROLE_ALIASES.get(role, role), "content": content}


def parse_chat(body, model: ServedModel) -> Job:
    """A ``/v1/chat/completions`` body -> :class:`Job` (the messages through the chat template)."""
    body = _check_body(body, model)
    if "messages" not in body:
        raise APIError("messages is required (a list of {role, content} objects)", "messages", status=422)
    messages = body["messages"]
    if not isinstance(messages, list):
        raise APIError(f"messages must be a list, got {messages!r}", "messages", status=422)
    try:
        ids = model.chat_ids([_message(i, m) for i, m in enumerate(messages)])
    except (TypeError, ValueError) as err:
        raise APIError(str(err), "messages") from None
    params = _sampling(body, len(ids), model, _eos(model))
    return Job("chat", ids, params, *_streaming(body))


# -- replies --------------------------------------------------------------------------------------------


class ChoiceText:
    """The text of one sample as its Outputs arrive: what is safe to send, and what it finally is."""

    def __init__(self, tokenizer, params: SamplingParams):
        self.tokenizer, self.params = tokenizer, params
        self.hold = max((len(s) for s in params.stop), default=1) - 1
        self.sent = ""  # text already handed out
        self.num_tokens = 0
        self.finish_reason: str | None = None
        self.error: str | None = None

    def update(self, out: Output) -> str:
        """The new text ``out`` makes safe to send (may be empty)."""
        self.num_tokens = len(out.token_ids)
        text = out.text
        if out.finished:
            self.finish_reason, self.error = out.finish_reason, out.error
            ids = out.token_ids
            if out.finish_reason == "stop" and ids and ids[-1] in self.params.stop_token_ids:
                text = self.tokenizer.decode(ids[:-1])  # the end-of-turn token is not content
            cuts = [i for i in (text.find(s) for s in self.params.stop) if i >= 0]
            text = text[: min(cuts)] if cuts else text
        else:
            text = text.rstrip("\ufffd")  # an incomplete UTF-8 character: wait for its next token
            text = text[: max(len(text) - self.hold, 0)]
        delta = text[len(self.sent) :] if text.startswith(self.sent) else ""
        self.sent += delta
        return delta


class Reply:
    """One request's reply: a full body, or the SSE chunks of a stream, for either endpoint."""

    def __init__(self, job: Job, request_id: str, model: ServedModel):
        self.job, self.id, self.model = job, request_id, model.name
        self.created = int(time.time())
        self.chat = job.endpoint == "chat"
        self.object = "chat.completion" if self.chat else "text_completion"
        self.choices = [ChoiceText(model.tokenizer, job.params) for _ in range(job.params.n)]

    @property
    def done(self) -> bool:
        return all(c.finish_reason is not None for c in self.choices)

    @property
    def error(self) -> str | None:
        return next((c.error or "aborted" for c in self.choices if c.finish_reason == "abort"), None)

    def usage(self) -> dict:
        prompt, completion = len(self.job.prompt_ids), sum(c.num_tokens for c in self.choices)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def _head(self, chunk: bool) -> dict:
        kind = self.object + (".chunk" if chunk and self.chat else "")
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def body(self) -> dict:
        """The non-streaming reply (every choice finished)."""
        choices = []
        for i, c in enumerate(self.choices):
            if self.chat:
                message = {"role": "assistant", "content": c.sent}
                choices.append({"index": i, "message": message, "finish_reason": c.finish_reason})
            else:
                text = {"text": c.sent, "logprobs": None}
                choices.append({"index": i, **text, "finish_reason": c.finish_reason})
        return {**self._head(False), "choices": choices, "usage": self.usage()}

    def _chunk(self, choices: list[dict]) -> dict:
        chunk = {**self._head(True), "choices": choices}
        if self.job.include_usage:
            chunk["usage"] = None  # only the last chunk carries usage
        return chunk

    def first_chunks(self) -> list[dict]:
        """Chat streams open every choice with the assistant's role."""
        if not self.chat:
            return []
        delta = {"role": "assistant", "content": ""}
        n = len(self.choices)
        return [self._chunk([{"index": i, "delta": delta, "finish_reason": None}]) for i in range(n)]

    def update(self, out: Output) -> dict | None:
        """Feed one engine Output; returns the chunk to stream, or None when there is nothing new."""
        choice = self.choices[out.index]
        delta = choice.update(out)
        if not delta and not out.finished:
            return None
        finish = choice.finish_reason if out.finished else None
        if self.chat:
            part = {"index": out.index, "delta": {"content": delta} if delta else {}, "finish_reason": finish}
        else:
            part = {"index": out.index, "text": delta, "finish_reason": finish, "logprobs": None}
        return self._chunk([part])

    def usage_chunk(self) -> dict:
        return {**self._head(True), "choices": [], "usage": self.usage()}
