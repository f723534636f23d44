"""Chat templates: how a conversation becomes the one string an instruction-tuned model reads (ChatML).

A chat model was fine-tuned on conversations rendered in one exact format, so a prompt must be rendered
the same way, character for character, or the model sees text unlike anything it was trained on. The
format ships with the model as a Jinja template (``chat_template`` in a Hugging Face
``tokenizer_config.json``, ``tokenizer.chat_template`` in a GGUF file). SmolLM2 uses ChatML (OpenAI's
Chat Markup Language, also Qwen's): every message becomes ``<|im_start|>{role}\\n{content}<|im_end|>\\n``,
a default system message is put first when the conversation has none, and the generation prompt
``<|im_start|>assistant\\n`` asks the model for the next turn.

We do not run Jinja (it is not a runtime dependency): ``parse_chat_template`` recognises the ChatML
template, with or without a default system prompt, reads that prompt from the template text, and
``ChatML.render`` renders it in plain Python. Any other template is refused with an error that says which
form is supported. ``tests/test_bpe_chat.py`` checks the rendering against transformers'
``apply_chat_template``.
"""

import re
from dataclasses import dataclass

ROLES = ("system", "user", "assistant")

# The ChatML template as Hugging Face writes it (SmolLM2's GGUF carries it with the default system prompt).
# Whitespace inside {% %} and {{ }} may vary; "\n" may be a newline or the escape \n inside a string.
# A default system prompt with a quote or a backslash is not recognised (it would need Jinja's unescaping).
_NL = r"(?:\n|\\n)"
_Q = r"['\"]"
_CHATML_TEMPLATE = re.compile(
    r"\{%\s*for\s+message\s+in\s+messages\s*%\}"
    rf"(?:\{{%\s*if\s+loop\.first\s+and\s+messages\[0\]\[{_Q}role{_Q}\]\s*!=\s*{_Q}system{_Q}\s*%\}}"
    rf"\{{\{{\s*{_Q}<\|im_start\|>system{_NL}(?P<system>(?:[^'\"\\]|\\n)*)<\|im_end\|>{_NL}{_Q}\s*\}}\}}"
    r"\{%\s*endif\s*%\})?"
    rf"\{{\{{\s*{_Q}<\|im_start\|>{_Q}\s*\+\s*message\[{_Q}role{_Q}\]\s*\+\s*{_Q}{_NL}{_Q}\s*\+\s*"
    rf"message\[{_Q}content{_Q}\]\s*\+\s*{_Q}<\|im_end\|>{_Q}\s*\+\s*{_Q}{_NL}{_Q}\s*\}}\}}"
    r"\{%\s*endfor\s*%\}"
    rf"\{{%\s*if\s+add_generation_prompt\s*%\}}\{{\{{\s*{_Q}<\|im_start\|>assistant{_NL}{_Q}\s*\}}\}}"
    r"\{%\s*endif\s*%\}"
)


@dataclass(frozen=True)
class ChatML:
    """ChatML rendering; ``default_system`` is the system message put first when a conversation has none."""

    default_system: str | None = None

    def render(self, messages, add_generation_prompt: bool = True) -> str:
        """A list of ``{"role", "content"}`` dicts -> the prompt text, as the Jinja template renders it."""
        check_messages(messages)
        parts = []
        if self.default_system is not None and messages[0]["role"] != "system":
            parts.append(f"<|im_start|>system\n{self.default_system}<|im_end|>\n")
        parts += [f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages]
        if add_generation_prompt:
            parts.append("<|im_start|>assistant\n")
        return "".join(parts)


def parse_chat_template(template: str) -> ChatML:
    """A Jinja chat template -> ``ChatML``; ValueError for a template that is not the ChatML one."""
    if not isinstance(template, str):
        raise TypeError(f"chat template must be a str (Jinja source), got {type(template).__name__}")
    m = _CHATML_TEMPLATE.fullmatch(template)
    if m is None:
        raise ValueError(
            f"unsupported chat template {template[:120]!r}...: only the ChatML template is recognised, "
            "'<|im_start|>' + role + '\\n' + content + '<|im_end|>\\n' per message, then "
            "'<|im_start|>assistant\\n' when add_generation_prompt, optionally with a default system "
            "message (SmolLM2's). Render other formats yourself, or add them to bpe/chat.py."
        )
    system = m.group("system")
    return ChatML(None if system is None else system.replace("\\n", "\n"))


def check_messages(messages):
    """Raise TypeError/ValueError naming the first malformed message (and what a message must be)."""
    if not isinstance(messages, (list, tuple)):
        raise TypeError(
            f"messages must be a list of {{'role': ..., 'content': ...}} dicts, got {type(messages).__name__}"
        )
    if not messages:
        raise ValueError("messages is empty; a conversation needs at least one message (as in transformers)")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise TypeError(f"messages[{i}] = {m!r} must be a dict with 'role' and 'content' keys")
        if m["role"] not in ROLES:
            raise ValueError(f"messages[{i}] has role {m['role']!r}; use one of {ROLES}")
        if not isinstance(m["content"], str):
            raise TypeError(
                f"messages[{i}] ({m['role']}) has content of type {type(m['content']).__name__}; "
                "content must be a str (this template has no multimodal or tool-call parts)"
            )
