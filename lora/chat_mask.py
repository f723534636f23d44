"""The assistant-only loss mask: which tokens of a rendered conversation are targets.

Teaches what "train only on the replies" means at the token level. A conversation is rendered once with
the model's own chat template (SmolLM2's ChatML, ``bpe.chat``) and encoded as one string, so its ids are
exactly those the model reads at inference. The mask marks every token that overlaps an assistant turn's
*span*: its content and the end-of-turn token that closes it (``<|im_end|>``), so the model learns what
to say and when to stop. It marks nothing of the system or user turns and nothing of the assistant header
``<|im_start|>assistant\\n``: the model is given those, it does not have to predict them.

Unlike ``lora.examples.make_example``, which encodes a prompt and one completion separately and joins
the ids, this handles any number of turns and tokenizes the whole text once, as transformers'
``apply_chat_template(..., return_assistant_tokens_mask=True)`` does with a template whose assistant
content sits inside ``{% generation %}`` markers. A token that straddles a span's edge counts as inside,
as there. Spans are found by rendering each prefix of the conversation (a chat template renders a prefix
as a prefix of the whole) and locating the turn's content + end token at its end; token spans come from
the bytes each id decodes to, which also checks that the text round-trips through the tokenizer.

The result is a ``lora.examples.Example`` (input ``ids[:-1]``, target ``ids[1:]`` where masked, -100
elsewhere), so ``lora.finetune`` trains on conversations unchanged.

Reference: transformers ``PreTrainedTokenizerBase.apply_chat_template`` (``return_assistant_tokens_mask``)
and its chat-templating docs (generation markers); TRL ``SFTTrainer`` (``assistant_only_loss``).
"""

from collections.abc import Sequence
from dataclasses import dataclass

from gpt.model import IGNORE_INDEX
from lora.chat_data import check_conversation
from lora.examples import Example, end_text


@dataclass(frozen=True)
class MaskedChat:
    """A rendered conversation, its ids and the assistant mask (1 = the token is a reply's)."""

    text: str
    ids: tuple[int, ...]  # (T,)
    mask: tuple[int, ...]  # (T,) 0/1
    spans: tuple[tuple[int, int], ...]  # [start, end) characters of each assistant turn in text

    @property
    def n_masked(self) -> int:
        return sum(self.mask)


def assistant_spans(tokenizer, messages, end: str, record: str) -> tuple[str, list[tuple[int, int]]]:
    """(the rendered conversation, the [start, end) characters of each assistant turn's content + end)."""

    def render(turns) -> str:
        try:
            return tokenizer.apply_chat_template(turns, add_generation_prompt=False, tokenize=False)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{record}: the chat template cannot render it: {e}") from e

    text = render(messages)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prefix = render(messages[: i + 1])
        turn = m["content"] + end
        start = prefix.rfind(turn)
        if not text.startswith(prefix) or start < 0 or (spans and start < spans[-1][1]):
            raise ValueError(
                f"{record}: the chat template does not render turn {i} as '<header>content{end}' at the end "
                "of the conversation's prefix; the assistant mask needs a template that renders turn by turn"
            )
        spans.append((start, start + len(turn)))
    return text, spans


def render_masked(tokenizer, messages, record: str = "conversation", end: str | None = None) -> MaskedChat:
    """Render ``messages`` with the tokenizer's chat template, encode the whole text, mask the replies.

    ``end`` is the end-of-turn text (default the tokenizer's eos, ``<|im_end|>``). A conversation that
    is malformed, or whose text does not round-trip through the tokenizer, is a ValueError naming
    ``record``.
    """
    check_conversation(messages, record)
    end = end_text(tokenizer) if end is None else end
    text, spans = assistant_spans(tokenizer, messages, end, record)
    ids = tokenizer.encode(text, allowed_special="all")
    pieces = [tokenizer.decode_bytes([i]) for i in ids]
    data = text.encode("utf-8")
    if b"".join(pieces) != data:
        raise ValueError(
            f"{record}: the rendered text does not round-trip through the tokenizer (it drops bytes it has "
            "no token for); clean the text or drop the record"
        )
    byte_spans = [(len(text[:s].encode("utf-8")), len(text[:e].encode("utf-8"))) for s, e in spans]
    mask, start = [], 0
    for piece in pieces:
        stop = start + len(piece)
        mask.append(int(any(start < e and stop > s for s, e in byte_spans)))  # overlaps a reply
        start = stop
    return MaskedChat(text, tuple(ids), tuple(mask), tuple(spans))


def masked_example(chat: MaskedChat) -> Example:
    """Input ``ids[:-1]``, target ``ids[t + 1]`` where it is masked (-100 elsewhere); tokens after the
    last reply are dropped, they would carry no target."""
    last = max(t for t, m in enumerate(chat.mask) if m)
    assert chat.mask[0] == 0, "the first token has no token before it to predict it from"
    ids, mask = chat.ids[: last + 1], chat.mask[: last + 1]
    targets = [ids[t + 1] if mask[t + 1] else IGNORE_INDEX for t in range(len(ids) - 1)]
    return Example(tuple(ids[:-1]), tuple(targets))


def conversation_examples(
    tokenizer, conversations: Sequence, max_len: int, source: str = "conversations"
) -> tuple[list[Example], int]:
    """(examples, number dropped): each conversation rendered and masked; those whose example is longer
    than ``max_len`` tokens are dropped (not cut: a cut reply teaches the model to stop mid-sentence)."""
    if max_len < 2:
        raise ValueError(f"max_len must be >= 2 tokens, got {max_len}")
    examples, dropped = [], 0
    for i, messages in enumerate(conversations):
        example = masked_example(render_masked(tokenizer, messages, f"{source}[{i}]"))
        if len(example.input_ids) > max_len:
            dropped += 1
        else:
            examples.append(example)
    return examples, dropped
