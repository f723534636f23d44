"""A released byte-level BPE tokenizer (Hugging Face / GGUF style) rebuilt as one of ours.

Hugging Face's ``tokenizer.json`` (and GPT-2's ``vocab.json`` + ``merges.txt``, and a GGUF file's
``tokenizer.ggml.tokens`` / ``tokenizer.ggml.merges``) store the same object our ``Tokenizer`` is, in
another spelling. Unlike tiktoken's ranks (``convert.py``), which store token *bytes* and leave the merges
implicit, these list every token as a *string* whose characters stand for bytes, and list the merges
explicitly in rank order (``"Ġ t"`` first: space + ``t``). The character alphabet is GPT-2's
``bytes_to_unicode`` (openai/gpt-2, ``src/encoder.py``): the 188 printable bytes stand for themselves, the
other 68 (space, control bytes, ...) are shifted to U+0100 and up, so ``Ġ`` is the space byte ``0x20``.

``from_vocab_merges`` maps the strings back to bytes and rebuilds ``byte_ids`` and ``merges``. Our encode
loop uses a merge's new id as its priority, which is exact when ids grow with merge rank (they do for
GPT-2 and SmolLM2: merge ``r`` makes id ``first + r``); a vocabulary where they do not is refused. Bytes
with no token (SmolLM2 has none for 21 bytes, e.g. ``0x04`` and the never-valid UTF-8 bytes ``0xF5``..)
are dropped, as Hugging Face's BPE drops them when it has no unknown token. Special tokens (``<|im_end|>``)
are split out of any text before BPE, as Hugging Face does for its added tokens. The tokenizer also carries
its bos/eos/pad ids and chat template (``chat.py``), so a serving loop, SFT or evals need nothing else.
"""

from bpe.chat import parse_chat_template
from bpe.regex_tokenizer import RegexTokenizer


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> character map: printable bytes map to themselves, the rest to U+0100, U+0101, ...

    Printable here means ``!``..``~``, ``¡``..``¬`` and ``®``..``ÿ`` (188 bytes); the other 68 bytes get
    the characters from U+0100 up in byte order, so space (0x20, the 33rd of them) is ``Ġ`` (U+0120)
    and newline is ``Ċ`` (U+010A). Every character is printable and none is whitespace, so a token is
    always a visible string and a merges line ``"a b"`` splits on its one space.
    """
    printable = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), 256)}
    table, shifted = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + shifted)
            shifted += 1
    return table


class ByteLevelTokenizer(RegexTokenizer):
    """A byte-level BPE tokenizer loaded from a released vocabulary; encodes like Hugging Face's.

    Built by ``from_vocab_merges`` (or ``quant.tokenizer_from_gguf``); it is not trained or saved here.
    """

    kind = "byte_level"

    def __init__(self, pattern: str = "gpt2"):
        super().__init__(pattern)
        self.bos_id: int | None = None
        self.eos_id: int | None = None
        self.pad_id: int | None = None
        self.chat_template: str | None = None  # the Jinja source, as shipped with the model

    def encode(self, text: str, allowed_special="all") -> list[int]:
        """text -> ids; special tokens in the text become their ids by default, as in Hugging Face.

        ``allowed_special`` takes the same values as ``Tokenizer.encode`` (``"none"`` encodes
        ``<|im_end|>`` as ordinary text). No BOS is added (SmolLM2's ``add_bos_token`` is false).
        """
        return super().encode(text, allowed_special=allowed_special)

    def encode_batch(self, texts, *, num_workers=None, num_threads=None, allowed_special="all"):
        """``Tokenizer.encode_batch`` with special tokens allowed by default, as in ``encode``."""
        return super().encode_batch(
            texts, num_workers=num_workers, num_threads=num_threads, allowed_special=allowed_special
        )

    def apply_chat_template(self, messages, add_generation_prompt: bool = True, tokenize: bool = False):
        """Render a conversation with the model's chat template; ``tokenize=True`` returns its ids.

        ``messages`` is a list of ``{"role": "system" | "user" | "assistant", "content": str}``. Unlike
        transformers, ``add_generation_prompt`` defaults to True (the prompt then ends with
        ``<|im_start|>assistant\\n``, ready to generate); pass False to render a finished conversation.
        """
        if self.chat_template is None:
            raise ValueError("this tokenizer has no chat template; build it with chat_template=<Jinja text>")
        text = parse_chat_template(self.chat_template).render(messages, add_generation_prompt)
        return self.encode(text, allowed_special="all") if tokenize else text

    def train(self, *args, **kwargs):
        raise NotImplementedError(
            "a ByteLevelTokenizer holds a released vocabulary; train a bpe.RegexTokenizer instead"
        )

    def save(self, file_prefix):
        raise NotImplementedError(
            "a ByteLevelTokenizer is not saved as a .model file; rebuild it from its source "
            "(bpe.from_vocab_merges or quant.tokenizer_from_gguf)"
        )

    def load(self, model_file):
        raise NotImplementedError(
            "a ByteLevelTokenizer is built by bpe.from_vocab_merges or quant.tokenizer_from_gguf, not loaded"
        )


def from_vocab_merges(
    tokens,
    merges,
    *,
    special_tokens: dict[str, int] | None = None,
    pattern: str = "gpt2",
    bos_id: int | None = None,
    eos_id: int | None = None,
    pad_id: int | None = None,
    chat_template: str | None = None,
) -> ByteLevelTokenizer:
    """Build a ``ByteLevelTokenizer`` from token strings and a ranked merge list, both in GPT-2's alphabet.

    ``tokens[i]`` is the string of id ``i``; ``merges`` lists ``"a b"`` strings (or ``(a, b)`` pairs)
    from the first-learned merge to the last. ``special_tokens`` names the ids that are not BPE tokens
    (``{"<|im_end|>": 2}``); every other id must be one byte or the result of one merge.
    """
    if not isinstance(tokens, (list, tuple)) or not all(isinstance(t, str) for t in tokens):
        raise TypeError("tokens must be a list of str, the token string of each id in order")
    if not isinstance(merges, (list, tuple)):
        raise TypeError(f"merges must be a list of 'a b' strings, got {type(merges).__name__}")
    specials = dict(special_tokens or {})
    special_ids = set(specials.values())
    for name, idx in specials.items():
        if not (isinstance(idx, int) and 0 <= idx < len(tokens) and tokens[idx] == name):
            raise ValueError(f"special token {name!r}: id {idx!r} must be the index of that string in tokens")

    to_byte = {ch: b for b, ch in bytes_to_unicode().items()}
    token_id = {t: i for i, t in enumerate(tokens) if i not in special_ids}
    if len(token_id) != len(tokens) - len(special_ids):
        raise ValueError("tokens lists the same string twice; each token string must name one id")
    byte_ids: list[int | None] = [None] * 256
    for t, i in token_id.items():
        if len(t) == 1:
            if t not in to_byte:
                raise ValueError(
                    f"token {i} {t!r} is not a character of GPT-2's byte alphabet; is this a byte-level "
                    "(tokenizer.ggml.model = gpt2) vocabulary?"
                )
            byte_ids[to_byte[t]] = i

    ranked, last, known = {}, -1, {i for i in byte_ids if i is not None}
    for rank, merge in enumerate(merges):
        parts = merge.split(" ") if isinstance(merge, str) else list(merge)
        if len(parts) != 2:
            raise ValueError(f"merge {rank} {merge!r} must be two token strings, 'a b'")
        a, b = parts
        ia, ib, new = token_id.get(a), token_id.get(b), token_id.get(a + b)
        if ia is None or ib is None or new is None:
            missing = next(t for t, i in ((a, ia), (b, ib), (a + b, new)) if i is None)
            raise ValueError(f"merge {rank} {merge!r} uses {missing!r}, which is not in tokens")
        if ia not in known or ib not in known:
            raise ValueError(f"merge {rank} {merge!r} uses a token that only a later merge makes")
        if new <= last:
            raise ValueError(
                f"merge {rank} {merge!r} makes id {new}, not above the previous merge's id {last}: our "
                "encode loop uses ids as merge priorities, so ids must grow with merge rank"
            )
        ranked[(ia, ib)] = last = new
        known.add(new)

    stray = [i for i in token_id.values() if i not in known]
    if stray:
        raise ValueError(
            f"{len(stray)} tokens are neither one byte nor made by a merge, e.g. id {stray[0]} "
            f"{tokens[stray[0]]!r}; list such tokens in special_tokens"
        )
    for name, idx in (("bos_id", bos_id), ("eos_id", eos_id), ("pad_id", pad_id)):
        if idx is not None and not (isinstance(idx, int) and 0 <= idx < len(tokens)):
            raise ValueError(f"{name}={idx!r} is not a token id (0..{len(tokens) - 1})")

    tok = ByteLevelTokenizer(pattern)
    tok.byte_ids, tok.merges = byte_ids, ranked
    tok._rebuild()
    tok.register_special_tokens(specials)
    tok.bos_id, tok.eos_id, tok.pad_id = bos_id, eos_id, pad_id
    tok.chat_template = chat_template
    return tok
