"""Conversations for the engine: checked messages through the tokenizer's chat template.

Teaches what a serving engine must refuse before it renders a chat: a role the template does not
know, and text that spells a control token (the template's output is encoded with its special tokens
live, so such text would inject a fake turn). A chat request also stops at the model's end-of-turn
token, as a chat model's generation config asks.

Reference: vLLM ``entrypoints/chat_utils.py`` (message parsing before ``apply_chat_template``).
"""

import dataclasses

from kvcache.request import SamplingParams

CHAT_ROLES = ("system", "user", "assistant")


def chat_template_ids(tokenizer, messages: list[dict]) -> list[int]:
    """A conversation -> token ids through ``tokenizer.apply_chat_template``, the assistant's turn
    opened (``add_generation_prompt``); each message is checked first."""
    if tokenizer is None or not hasattr(tokenizer, "apply_chat_template"):
        raise TypeError("chat needs a tokenizer with apply_chat_template: LLMEngine(model, tokenizer=...)")
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ValueError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str) or "role" not in m:
            raise ValueError(f"message {i} must be a dict with a 'role' and a str 'content', got {m!r}")
        if m["role"] not in CHAT_ROLES:
            raise ValueError(f"message {i} has role {m['role']!r}; use one of {CHAT_ROLES}")
        for name in getattr(tokenizer, "special_tokens", {}):
            if name in m["content"]:
                raise ValueError(f"message {i} contains the special token {name!r} as text; remove it")
    return list(tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True))


def stop_at_end_of_turn(params, n: int, eos_id: int | None) -> list:
    """``n`` sampling params (``params``: one for all, a list, or None for the defaults), each with
    ``eos_id`` added to its stop tokens. A value of the wrong type is passed on for the engine's check
    to name."""
    params = params if isinstance(params, list) else [params] * n
    params = [SamplingParams() if p is None else p for p in params]
    out = []
    for p in params:
        if isinstance(p, SamplingParams) and eos_id is not None and eos_id not in p.stop_token_ids:
            p = dataclasses.replace(p, stop_token_ids=(*p.stop_token_ids, eos_id))
        out.append(p)
    return out
