"""Instruction datasets as chat conversations: read, check, deduplicate, length-filter, split, mix.

Teaches what an instruction-tuning set is before it becomes tokens: one record per conversation, a list
of ``{"role", "content"}`` turns (system optional, at least one assistant turn), built from three course
datasets and cleaned in stages whose losses are counted (:class:`ChatDataReport`), so the notebook can
show what each stage removed:

1. **read**: ``alpaca_libre`` keeps rows whose ``status`` is ``"ok"`` (the generator's work files also
   hold rejected tasks; ``SOURCE.md``); an Alpaca record becomes instruction (+ a blank line + input,
   when there is one) as the user turn and output as the assistant turn. GSM8K's question is the user
   turn, its worked solution, ending ``#### N``, the assistant turn (calculator annotations removed, as
   a reader sees it). Every text is stripped (Alpaca outputs carry trailing newlines);
2. **check**: a conversation without an assistant turn, with an unknown role or with content that is
   not a str is a ValueError naming the record (``source[index]``);
3. **too short**: an assistant reply under ``min_reply_chars`` characters (empty by default) is dropped;
4. **exact and near duplicates**: ``gpt.data.dedup`` on the conversation's text (its turns joined by
   blank lines): SHA-256 first, then MinHash + LSH over word 5-grams (Jaccard >= 0.8 by default). The
   first of each group is kept. Deduplicating before the split keeps copies of a training record out of
   the held-out set;
5. **too long**: ``max_tokens`` counts the tokens of the conversation rendered by the model's chat
   template (SmolLM2 puts its default system prompt first), ``max_chars`` the characters of its turns;
6. **split**: a seeded train/val split (``lora.examples.split``), per source;
7. **mix**: the training sets mixed with stated epochs per source (``gpt.data.mixture``: 2.0 repeats a
   source twice, 0.25 keeps a random quarter). :data:`MIXTURE` gives roughly a third to each.

Reference: Taori et al. 2023 (Stanford Alpaca, the record format); Lee et al. 2022 (deduplicating
training data); Wang et al. 2023, "How Far Can Camels Go?" (Tulu: mixing instruction sets).
"""

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from bpe.chat import check_messages
from gpt.data.dedup import MinHashConfig, exact_duplicate_mask, near_duplicate_mask
from gpt.data.gsm8k import load_gsm8k, strip_calculator
from gpt.data.mixture import mix_documents
from gpt.data.paths import dataset_path
from lora.examples import split

SOURCES = ("alpaca_libre", "code_alpaca_2k", "gsm8k")
ALPACA_LIBRE_FILES = ("alpaca_libre_tasks_v1.jsonl", "alpaca_libre_tasks_v3.jsonl")
# Epochs per source: GSM8K's 7,473 training problems would otherwise outnumber the other two together
# (1,856 alpaca_libre rows with status "ok", 2,017 code_alpaca_2k records) about two to one. With the
# default ChatDataConfig the mixture holds 1,736 / 1,911 / 1,775 training conversations.
MIXTURE = {"alpaca_libre": 1.0, "code_alpaca_2k": 1.0, "gsm8k": 0.25}

Conversation = list[dict[str, str]]  # [{"role": "system" | "user" | "assistant", "content": str}, ...]


@dataclass
class ChatDataConfig:
    """The filters and the split of one source (every length is stated in its unit)."""

    max_tokens: int | None = 512  # tokens of the rendered conversation (needs the tokenizer); None: off
    max_chars: int | None = None  # characters of all turns' contents together; None: off
    min_reply_chars: int = 1  # characters of the assistant turns' contents together (after stripping)
    val_fraction: float = 0.05
    seed: int = 0
    minhash: MinHashConfig = field(default_factory=MinHashConfig)
    limit: int | None = None  # read only the first `limit` records of the source (smoke runs, tests)

    def __post_init__(self):
        for name in ("max_tokens", "max_chars", "limit"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or None (no filter), got {value}")
        if self.min_reply_chars < 0:
            raise ValueError(f"min_reply_chars must be >= 0, got {self.min_reply_chars}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")


@dataclass
class ChatDataReport:
    """How many records each stage read, dropped and kept, in stage order."""

    source: str
    read: int = 0  # records in the file(s)
    not_ok: int = 0  # alpaca_libre rows whose status is not "ok"
    too_short: int = 0
    exact_duplicates: int = 0
    near_duplicates: int = 0
    too_long: int = 0
    train: int = 0
    val: int = 0

    @property
    def dropped(self) -> int:
        return self.not_ok + self.too_short + self.exact_duplicates + self.near_duplicates + self.too_long

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class ChatData:
    """One source's conversations after every stage: train and val, and the report."""

    train: list[Conversation]
    val: list[Conversation]
    report: ChatDataReport


# -- checking -----------------------------------------------------------------------------------------


def check_conversation(messages, record: str) -> None:
    """One ValueError naming ``record`` (e.g. ``"gsm8k[12]"``) for a malformed conversation: not a list of
    ``{"role", "content"}`` dicts, an unknown role, content that is not a str, or no assistant turn."""
    try:
        check_messages(messages)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{record}: {e}") from e
    if not any(m["role"] == "assistant" for m in messages):
        roles = [m["role"] for m in messages]
        raise ValueError(
            f"{record} has no assistant turn (roles {roles}); a training conversation needs at least one "
            "reply to learn"
        )


def conversation_text(messages: Conversation) -> str:
    """The turns' contents joined by blank lines: what deduplication and ``max_chars`` look at."""
    return "\n\n".join(m["content"] for m in messages)


def reply_chars(messages: Conversation) -> int:
    return sum(len(m["content"]) for m in messages if m["role"] == "assistant")


# -- reading ------------------------------------------------------------------------------------------


def _field(record, key: str, name: str):
    if not isinstance(record, dict) or key not in record:
        raise ValueError(f"{name}: expected an object with a {key!r} field, got {str(record)[:80]!r}")
    return record[key]


def alpaca_conversation(record, name: str) -> Conversation:
    """An Alpaca record -> [user: instruction (+ blank line + input), assistant: output], stripped."""
    instruction, input_, output = (_field(record, k, name) for k in ("instruction", "input", "output"))
    for key, value in (("instruction", instruction), ("input", input_), ("output", output)):
        if not isinstance(value, str):
            raise ValueError(f"{name}: {key} is a {type(value).__name__}, not a str")
    user = instruction.strip() + ("\n\n" + input_.strip() if input_.strip() else "")
    return [{"role": "user", "content": user}, {"role": "assistant", "content": output.strip()}]


def read_source(source: str, limit: int | None = None) -> tuple[list[Conversation], int]:
    """(conversations, rows dropped for a status other than "ok") of the first ``limit`` records of a
    source, in file order (alpaca_libre: v1, then v3)."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; the sources are {SOURCES}")
    if source == "gsm8k":
        conversations = []
        for p in load_gsm8k("train", limit):  # the test split stays for evaluation
            answer = strip_calculator(p.answer).strip()
            conversations.append(
                [{"role": "user", "content": p.question.strip()}, {"role": "assistant", "content": answer}]
            )
        return conversations, 0
    if source == "code_alpaca_2k":
        records = json.loads(dataset_path("code_alpaca_2k", "code_alpaca_2k.json").read_text("utf-8"))
        records = records[:limit] if limit is not None else records
        return [alpaca_conversation(r, f"code_alpaca_2k[{i}]") for i, r in enumerate(records)], 0
    records = []
    for file in ALPACA_LIBRE_FILES:
        lines = dataset_path("alpaca_libre", file).read_text("utf-8").splitlines()
        records += [json.loads(line) for line in lines if line.strip()]
    records = records[:limit] if limit is not None else records
    conversations, not_ok = [], 0
    for i, r in enumerate(records):
        if _field(r, "status", f"alpaca_libre[{i}]") != "ok":
            not_ok += 1
        else:
            conversations.append(alpaca_conversation(r, f"alpaca_libre[{i}]"))
    return conversations, not_ok


# -- the stages ---------------------------------------------------------------------------------------


def clean_conversations(
    source: str,
    conversations: Sequence[Conversation],
    tokenizer=None,
    cfg: ChatDataConfig | None = None,
    not_ok: int = 0,
) -> ChatData:
    """Stages 2-6 on any conversations; a bad one is a ValueError naming ``source[its index in the list]``."""
    cfg = cfg or ChatDataConfig()
    if cfg.max_tokens is not None and tokenizer is None:
        raise ValueError(
            "max_tokens counts tokens of the rendered conversation: pass the tokenizer, or "
            "max_tokens=None to filter by characters only"
        )
    for i, messages in enumerate(conversations):
        check_conversation(messages, f"{source}[{i}]")
    report = ChatDataReport(source, read=len(conversations) + not_ok, not_ok=not_ok)
    kept = [m for m in conversations if reply_chars(m) >= cfg.min_reply_chars]
    report.too_short = len(conversations) - len(kept)

    def drop(flags) -> int:  # remove the conversations flagged True from `kept`, in place
        kept[:] = [m for m, flagged in zip(kept, flags, strict=True) if not flagged]
        return int(sum(flags))

    report.exact_duplicates = drop(exact_duplicate_mask([conversation_text(m) for m in kept]))
    report.near_duplicates = drop(near_duplicate_mask([conversation_text(m) for m in kept], cfg.minhash))

    def too_long(m: Conversation) -> bool:
        if cfg.max_chars is not None and len(conversation_text(m)) > cfg.max_chars:
            return True
        if cfg.max_tokens is None:
            return False
        return (
            len(tokenizer.apply_chat_template(m, add_generation_prompt=False, tokenize=True)) > cfg.max_tokens
        )

    report.too_long = drop([too_long(m) for m in kept])
    if not kept:
        raise ValueError(f"{source}: no conversation is left after the filters ({report}); loosen them")
    train, val = split(kept, min(round(cfg.val_fraction * len(kept)), len(kept) - 1), cfg.seed)
    report.train, report.val = len(train), len(val)
    assert report.train + report.val == report.read - report.dropped, f"the stages do not add up: {report}"
    return ChatData(train, val, report)


def build_chat_data(source: str, tokenizer=None, cfg: ChatDataConfig | None = None) -> ChatData:
    """One course source (:data:`SOURCES`) read from ``$LLM_COURSE_DATA`` and cleaned (stages 1-6)."""
    cfg = cfg or ChatDataConfig()
    conversations, not_ok = read_source(source, cfg.limit)
    return clean_conversations(source, conversations, tokenizer, cfg, not_ok)


def mix_conversations(
    train_sets: dict[str, list[Conversation]], epochs: dict[str, float] | None = None, seed: int = 0
) -> tuple[list[Conversation], dict[str, int]]:
    """(the training conversations of every source, repeated/subsampled by ``epochs`` (default
    :data:`MIXTURE`) and shuffled together by ``seed``, conversations taken per source)."""
    if epochs is None:
        epochs = {name: MIXTURE[name] for name in train_sets if name in MIXTURE}
    return mix_documents(train_sets, epochs, seed)
