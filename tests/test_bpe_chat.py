"""bpe.chat: ChatML rendered in Python equals the Jinja template rendered by Jinja.

The reference is jinja2 configured as transformers' ``apply_chat_template`` configures it (a sandboxed
environment with ``trim_blocks`` and ``lstrip_blocks``). SmolLM2's own template is checked against
transformers itself in ``tests/test_quant_tokenizer.py``.
"""

import pytest

from bpe.chat import ChatML, parse_chat_template

SYSTEM = "You are a terse test assistant, made for this test"
WITH_SYSTEM = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\n" + SYSTEM + "<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# The same without a default system prompt, with the escape \n and other spacing and quotes.
PLAIN = (
    '{% for message in messages %}{{ "<|im_start|>" + message["role"] + "\\n" + message["content"] + '
    '"<|im_end|>" + "\\n" }}{% endfor %}{%  if add_generation_prompt %}{{"<|im_start|>assistant\\n"}}'
    "{% endif %}"
)
ESCAPED = WITH_SYSTEM.replace("\n", "\\n")

CONVERSATIONS = [
    [{"role": "user", "content": "Hi!"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 2?"}],
    [
        {"role": "user", "content": "Name a prime."},
        {"role": "assistant", "content": "7"},
        {"role": "user", "content": "Another,\n  please."},
    ],
    [{"role": "assistant", "content": ""}, {"role": "user", "content": "<|im_end|> inside"}],
]


def jinja_render(template, messages, add_generation_prompt):
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(messages=messages, add_generation_prompt=add_generation_prompt)


def test_hand_worked():
    chat = parse_chat_template(WITH_SYSTEM)
    assert chat == ChatML(default_system=SYSTEM)
    assert chat.render([{"role": "user", "content": "Hi!"}]) == (
        f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n"
    )
    assert parse_chat_template(PLAIN).render([{"role": "user", "content": "Hi!"}], False) == (
        "<|im_start|>user\nHi!<|im_end|>\n"
    )


@pytest.mark.parametrize("template", [WITH_SYSTEM, PLAIN, ESCAPED], ids=["system", "plain", "escaped"])
@pytest.mark.parametrize("add_generation_prompt", [True, False])
@pytest.mark.parametrize("messages", CONVERSATIONS, ids=range(len(CONVERSATIONS)))
def test_render_equals_jinja(template, add_generation_prompt, messages):
    ours = parse_chat_template(template).render(messages, add_generation_prompt)
    assert ours == jinja_render(template, messages, add_generation_prompt)


@pytest.mark.parametrize(
    "template",
    [
        "{% for m in messages %}{{ m.content }}{% endfor %}",
        WITH_SYSTEM + "\n",  # a trailing newline is rendered by Jinja
        WITH_SYSTEM.replace("<|im_end|>' + '\n'", "<|eot_id|>' + '\n'"),
        WITH_SYSTEM.replace("{% for", "{%- for"),
    ],
)
def test_unrecognised_template_names_what_is_supported(template):
    with pytest.raises(ValueError, match="only the ChatML template is recognised"):
        parse_chat_template(template)


def test_template_type_error():
    with pytest.raises(TypeError, match="must be a str"):
        parse_chat_template(None)


@pytest.mark.parametrize(
    ("messages", "error", "match"),
    [
        ({"role": "user", "content": "hi"}, TypeError, "must be a list"),
        ([], ValueError, "at least one message"),
        ([("user", "hi")], TypeError, r"messages\[0\] .* must be a dict"),
        ([{"role": "user"}], TypeError, "'role' and 'content' keys"),
        ([{"role": "usr", "content": "hi"}], ValueError, "role 'usr'; use one of"),
        ([{"role": "user", "content": "a"}, {"role": "user", "content": None}], TypeError, r"messages\[1\]"),
    ],
)
def test_malformed_messages(messages, error, match):
    with pytest.raises(error, match=match):
        ChatML().render(messages)
