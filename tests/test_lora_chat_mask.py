"""lora.chat_mask: the assistant-only mask equals transformers' ``return_assistant_tokens_mask`` token for
token, on real conversations from every builder and on hand-made edge cases, under a ChatML template with
``{% generation %}`` markers that renders SmolLM2's text exactly (checked); our ids equal transformers'
ids, the text round-trips, the masked tokens decode to exactly the replies and their end tokens (by hand),
and the examples train in ``lora.finetune`` unchanged."""

import copy

import pytest
import torch

from bpe.chat import parse_chat_template
from gpt import GPT, GPTConfig
from gpt.model import IGNORE_INDEX
from lora.chat_data import SOURCES, ChatDataConfig, build_chat_data
from lora.chat_mask import conversation_examples, masked_example, render_masked
from lora.examples import check_examples
from lora.finetune import FinetuneConfig, finetune

pytestmark = pytest.mark.usefixtures("one_thread")

GGUF = ("smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
# SmolLM2's ChatML with the assistant's content and end token inside generation markers; the default
# system prompt is passed in as a template variable, read from SmolLM2's own template
GENERATION_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\n' + default_system + '<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{% else %}{{ message['content'] + '<|im_end|>' }}{% endif %}"
    "{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def turn(role, content):
    return {"role": role, "content": content}


EDGE_CASES = [
    [turn("system", "Be brief."), turn("user", "2 + 2?"), turn("assistant", "4")],
    [
        turn("user", "Hi"),
        turn("assistant", "Hello!"),
        turn("user", "Again?"),
        turn("assistant", "Hello again."),
    ],
    [
        turn("user", "Indent"),
        turn("assistant", "\n\n    def f():\n        return 1\n"),
    ],  # straddles the header
    [turn("user", "Say nothing"), turn("assistant", "")],
    [turn("user", "What is <|im_end|> for?"), turn("assistant", "It ends a turn.")],
    [turn("user", "Café?"), turn("assistant", "Un café ☕, 日本語も。 1,234.5")],
    [turn("assistant", "I start."), turn("user", "ok")],  # the last turn is the user's
]


@pytest.fixture(scope="module")
def tok(data_file):
    from quant.gguf import read_gguf
    from quant.tokenizer import tokenizer_from_gguf

    return tokenizer_from_gguf(read_gguf(data_file(*GGUF)).metadata)


@pytest.fixture(scope="module")
def hf(data_file):
    """transformers' tokenizer of the GGUF file, with SmolLM2's Digits step restored (its GGUF loader drops
    it; the same fix as tests/test_quant_tokenizer.py's ``hf`` fixture, which explains it)."""
    from tokenizers import pre_tokenizers
    from transformers import AutoTokenizer

    path = data_file(*GGUF)
    tok = copy.deepcopy(AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name))
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    return tok


@pytest.fixture(scope="module")
def real_conversations():
    """60 training conversations from each builder (run on the first 200 records of its source)."""
    cfg = ChatDataConfig(max_tokens=None, limit=200)
    return {source: build_chat_data(source, cfg=cfg).train[:60] for source in SOURCES}


def test_hand_worked(tok):
    chat = render_masked(tok, [turn("user", "Hi"), turn("assistant", "Hello!")])
    system = parse_chat_template(tok.chat_template).default_system
    expected = f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
    assert chat.text == expected + "<|im_start|>assistant\nHello!<|im_end|>\n"
    assert chat.spans == ((len(expected) + len("<|im_start|>assistant\n"), len(chat.text) - 1),)
    masked = [i for i, m in zip(chat.ids, chat.mask, strict=True) if m]
    assert tok.decode(masked) == "Hello!<|im_end|>" and masked[-1] == tok.eos_id
    assert chat.mask[-1] == 0  # the newline after the end token is not the reply's
    example = masked_example(chat)
    assert example.input_ids == chat.ids[: len(chat.ids) - 2]  # up to the token before <|im_end|>
    assert [t for t in example.targets if t != IGNORE_INDEX] == masked
    assert example.targets[-len(masked) :] == tuple(masked) and example.n_targets == len(masked)


@pytest.mark.parametrize("case", range(len(EDGE_CASES)))
def test_masked_runs_decode_to_the_replies(tok, case):
    """Each run of masked tokens is one reply and its end token, in order; everything else is not."""
    messages = EDGE_CASES[case]
    chat = render_masked(tok, messages)
    runs, current = [], []
    for i, m in zip(chat.ids, chat.mask, strict=True):
        if m:
            current.append(i)
        elif current:
            runs.append(current)
            current = []
    replies = [m["content"] + "<|im_end|>" for m in messages if m["role"] == "assistant"]
    if case == 2:  # "\n\n" of the header's newline and the reply's first newlines is one token
        assert tok.decode(runs[0]) == "\n" + replies[0]
    else:
        assert [tok.decode(r) for r in runs] == replies


def assert_equal_to_transformers(tok, hf, messages, system):
    chat = render_masked(tok, messages)
    assert chat.text == hf.apply_chat_template(messages, tokenize=False)  # SmolLM2's own template
    out = hf.apply_chat_template(
        messages,
        chat_template=GENERATION_TEMPLATE,
        default_system=system,
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
    )
    assert (
        hf.apply_chat_template(
            messages, chat_template=GENERATION_TEMPLATE, default_system=system, tokenize=False
        )
        == chat.text
    )
    assert list(chat.ids) == out["input_ids"]
    assert list(chat.mask) == out["assistant_masks"]
    assert tok.decode(chat.ids) == chat.text  # the rendered string round-trips


@pytest.mark.parametrize("case", range(len(EDGE_CASES)))
def test_edge_cases_equal_transformers(tok, hf, case):
    system = parse_chat_template(tok.chat_template).default_system
    assert_equal_to_transformers(tok, hf, EDGE_CASES[case], system)


@pytest.mark.parametrize("source", ["alpaca_libre", "code_alpaca_2k", "gsm8k"])
def test_real_conversations_equal_transformers(tok, hf, real_conversations, source):
    assert len(real_conversations[source]) == 60
    system = parse_chat_template(tok.chat_template).default_system
    for messages in real_conversations[source]:
        assert_equal_to_transformers(tok, hf, messages, system)


def test_mask_differs_from_transformers_when_the_header_is_included(tok, hf):
    """The comparison is sharp: counting the assistant header as a target is caught."""
    header = "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    generation = "{% if message['role'] == 'assistant' %}{% generation %}"
    assert header + generation in GENERATION_TEMPLATE
    with_header = GENERATION_TEMPLATE.replace(header + generation, generation + header)
    with_header = with_header.replace("{% else %}{{ message", "{% else %}" + header + "{{ message")
    messages = EDGE_CASES[0]
    system = parse_chat_template(tok.chat_template).default_system
    out = hf.apply_chat_template(
        messages,
        chat_template=with_header,
        default_system=system,
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
    )
    chat = render_masked(tok, messages)
    assert (
        hf.apply_chat_template(messages, chat_template=with_header, default_system=system, tokenize=False)
        == chat.text
    )
    assert list(chat.ids) == out["input_ids"] and list(chat.mask) != out["assistant_masks"]


def test_examples_train_in_finetune_unchanged(tok, real_conversations, tmp_path):
    conversations = [c for source in real_conversations.values() for c in source[:3]]
    examples, dropped = conversation_examples(tok, conversations, max_len=400, source="mixed")
    assert len(examples) + dropped == len(conversations) and len(examples) >= 6
    torch.manual_seed(0)
    shape = dict(vocab_size=tok.vocab_size, block_size=400, n_layer=1, n_head=2, n_embd=16, ffn_hidden=32)
    model = GPT(GPTConfig.llama(**shape))
    check_examples(examples, "examples", model.config.vocab_size, model.config.block_size)
    cfg = FinetuneConfig(
        out_dir=str(tmp_path),
        steps=2,
        batch_size=2,
        lr=1e-3,
        warmup_steps=0,
        eval_interval=2,
        eval_batch=4,
        device="cpu",
        progress=False,
        checkpoint=False,
    )
    out = finetune(model, examples[2:], examples[:2], cfg, pad_id=tok.pad_id or 0)
    assert out["step"] == 2 and all(torch.isfinite(torch.tensor(loss)) for _, loss in out["val_losses"])


class PlainTemplate:
    """A tokenizer stub whose template writes "role: content" lines with no end-of-turn token."""

    eos_id = 0

    def decode(self, ids):
        return "<END>"

    def apply_chat_template(self, messages, add_generation_prompt=True, tokenize=False):
        return "".join(f"{m['role']}: {m['content']}\n" for m in messages)


def test_bad_input_names_the_record(tok):
    with pytest.raises(ValueError, match=r"gsm8k\[7\] has no assistant turn"):
        render_masked(tok, [turn("user", "Hi")], "gsm8k[7]")
    with pytest.raises(ValueError, match=r"gsm8k\[7\]: .*role 'tool'"):
        render_masked(tok, [turn("user", "Hi"), turn("tool", "{}")], "gsm8k[7]")
    with pytest.raises(ValueError, match=r"gsm8k\[7\]: .*content of type list"):
        render_masked(tok, [turn("user", "Hi"), turn("assistant", ["a"])], "gsm8k[7]")
    with pytest.raises(ValueError, match=r"mine\[0\]: the chat template does not render turn 1"):
        conversation_examples(PlainTemplate(), [EDGE_CASES[0][1:], EDGE_CASES[0][1:]], 100, "mine")
    untemplated = copy.copy(tok)
    untemplated.chat_template = None
    with pytest.raises(ValueError, match=r"x\[2\]: the chat template cannot render it: .*no chat template"):
        render_masked(untemplated, EDGE_CASES[0], "x[2]")
    with pytest.raises(ValueError, match=r"x\[0\]: the rendered text does not round-trip"):
        render_masked(tok, [turn("user", "a\x04b"), turn("assistant", "ok")], "x[0]")  # 0x04 has no token
