"""Realistic chat requests for the engine's tests and benches, built from the course's datasets.

Random token ids exercise the scheduler but not what a served chat model sees: a chat template around
every prompt, a shared system prompt, short questions next to long documents, answers that stop on
``<|im_end|>``. :func:`chat_workload` mixes single-turn instructions (Alpaca Libre, Code Alpaca, GSM8K),
multi-turn conversations whose earlier assistant turns are the datasets' own answers, some with a system
prompt, and RAG-style prompts (a WikiText-2 passage, then a question) sized to fill the long end of the
range. :func:`copy_heavy_workload` asks for answers that copy from the prompt (quote a passage, return
edited code), where prompt-lookup speculative decoding finds its drafts. Every prompt is rendered by the
tokenizer's chat template and encoded; lengths are checked against ``prompt_tokens``; a seed fixes all.

References: the ShareGPT-style workloads of vLLM's ``benchmarks/benchmark_serving.py``; prompt-lookup
decoding's code-editing and summarisation examples (apoorvumang/prompt-lookup-decoding).
"""

import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from gpt.data.paths import dataset_path

SYSTEMS = (
    "You are a helpful assistant. Answer concisely.",
    "You are a patient tutor. Explain your reasoning step by step.",
    "You are an expert programmer. Reply with correct, idiomatic code.",
)
RAG_SYSTEM = "Answer the question using only the document the user gives you."
RAG_QUESTIONS = (
    "Summarise the document in two sentences.",
    "Which people and places does the document mention?",
    "What happened first, according to the document?",
    "List the years mentioned in the document and what happened in each.",
)

COPY_ASKS = (
    "Quote, word for word, every sentence of the document about {name}.",
    "Repeat the first paragraph of the document exactly.",
    "Extract the sentences of the document that contain a year, unchanged.",
)


@dataclass
class ChatRequest:
    """One conversation, its rendered prompt ids (ending with the assistant's turn) and a token budget."""

    messages: list[dict]
    prompt_ids: list[int] = field(repr=False)
    max_tokens: int
    kind: str = "chat"  # which recipe built it: "instruct", "multi_turn", "rag", "quote", "code_edit", ...


def _path(data_dir, *parts) -> Path:
    if data_dir is None:
        return dataset_path(*parts)  # raises naming LLM_COURSE_DATA when absent
    path = Path(data_dir).joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"dataset file {path} not found under data_dir={data_dir}")
    return path


def _instructions(data_dir) -> dict[str, list[tuple[str, str]]]:
    """(user turn, reference answer) pairs of each instruction dataset."""
    libre = []
    for name in ("alpaca_libre_tasks_v1.jsonl", "alpaca_libre_tasks_v3.jsonl"):
        for line in _path(data_dir, "alpaca_libre", name).read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            if row.get("status") == "ok":  # the work files keep rejected tasks too (SOURCE.md)
                libre.append(row)
    code = json.loads(_path(data_dir, "code_alpaca_2k", "code_alpaca_2k.json").read_text(encoding="utf-8"))
    gsm = [
        json.loads(x)
        for x in _path(data_dir, "gsm8k", "test.jsonl").read_text(encoding="utf-8").split("\n")
        if x
    ]

    def turn(r):
        return (r["instruction"] + ("\n\n" + r["input"] if r["input"] else ""), r["output"].strip())

    return {
        "alpaca": [turn(r) for r in libre if r["output"].strip()],
        "code": [turn(r) for r in code if r["output"].strip()],
        "gsm8k": [(r["question"], re.sub(r"<<[^<>]*>>", "", r["answer"])) for r in gsm],
    }


def _detok(text: str) -> str:
    """WikiText's tokenized spelling back to prose: ``1 @,@ 000`` -> ``1,000``, ``word ,`` -> ``word,``."""
    text = re.sub(r" @(.)@ ", r"\1", text)
    text = re.sub(r" ([.,;:!?)%'])", r"\1", text).replace("( ", "(").replace(" 's", "'s")
    return text.replace("<unk>", "").replace("  ", " ").strip()


def _paragraphs(data_dir) -> list[str]:
    """WikiText-2's body paragraphs (valid, then test), in file order, without headings, short lines or
    paragraphs where over 1% of the words are ``<unk>`` (WikiText's rare words)."""
    paras = []
    for split in ("valid", "test"):
        for line in _path(data_dir, "wikitext2", f"{split}.txt").read_text(encoding="utf-8").split("\n"):
            line, rare = line.strip(), line.count("<unk>")
            if len(line) > 200 and not line.startswith("=") and rare <= len(line.split()) // 100:
                paras.append(_detok(line))
    return paras


class _Builder:
    """Renders and measures conversations; fits documents to a token target."""

    def __init__(self, tokenizer, prompt_tokens, max_tokens, seed):
        lo, hi = prompt_tokens
        if not 1 <= lo <= hi:
            raise ValueError(f"prompt_tokens must be (lo, hi) with 1 <= lo <= hi, got {prompt_tokens}")
        if not 1 <= max_tokens[0] <= max_tokens[1]:
            raise ValueError(f"max_tokens must be (lo, hi) with 1 <= lo <= hi, got {max_tokens}")
        self.tok, self.lo, self.hi, self.max_tokens = tokenizer, lo, hi, max_tokens
        self.rng = random.Random(seed)

    def ids(self, messages) -> list[int]:
        return self.tok.encode(
            self.tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        )

    def request(self, messages, kind) -> ChatRequest | None:
        ids = self.ids(messages)
        if not self.lo <= len(ids) <= self.hi:
            return None
        return ChatRequest(messages, ids, self.rng.randint(*self.max_tokens), kind)

    def fit(self, make, text: str, target: int) -> list[dict]:
        """``make(doc)`` -> messages, with ``doc`` the longest word-boundary prefix of ``text`` that keeps the
        prompt within ``target`` tokens (by encoding the document once and cutting its ids)."""
        room = target - len(self.ids(make("")))
        doc_ids = self.tok.encode(text)
        for cut in (room, room - 8, room - 32):  # re-encoding can merge a few tokens differently at the cut
            doc = self.tok.decode(doc_ids[: max(cut, 0)]).rsplit(" ", 1)[0]
            if len(self.ids(make(doc))) <= target:
                return make(doc)
        return make("")

    def passage(self, paras) -> str:
        """Four consecutive paragraphs (mostly of one article), enough for the longest prompt."""
        start = self.rng.randrange(len(paras) - 4)
        return "\n\n".join(paras[start : start + 4])


def _fill(n: int, b: _Builder, recipes) -> list[ChatRequest]:
    """``n`` requests, recipes taken round-robin in a seeded order; a draw outside the length range is
    redrawn (at most 50 times per request, then a ValueError naming the range)."""
    order = [recipes[i % len(recipes)] for i in range(n)]
    b.rng.shuffle(order)
    out = []
    for kind, make in order:
        for _ in range(50):
            req = b.request(make(), kind)
            if req is not None:
                out.append(req)
                break
        else:
            raise ValueError(f"no {kind} prompt within prompt_tokens=({b.lo}, {b.hi}) in 50 draws; widen it")
    return out


def chat_workload(tokenizer, n=32, prompt_tokens=(20, 600), max_tokens=(8, 128), seed=0, data_dir=None):
    """``n`` mixed chat requests (:class:`ChatRequest`) with prompts of ``prompt_tokens`` tokens and budgets
    drawn from ``max_tokens``; ``data_dir`` defaults to ``$LLM_COURSE_DATA``."""
    b = _Builder(tokenizer, prompt_tokens, max_tokens, seed)
    pairs, paras = _instructions(data_dir), _paragraphs(data_dir)

    def instruct(source, system=False):
        user, _ = b.rng.choice(pairs[source])
        sys = [{"role": "system", "content": b.rng.choice(SYSTEMS)}] if system else []
        return [*sys, {"role": "user", "content": user}]

    def multi_turn():  # earlier turns answered by the dataset, then a new question
        msgs = []
        for _ in range(b.rng.randint(2, 3)):
            user, answer = b.rng.choice(pairs[b.rng.choice(("alpaca", "code", "gsm8k"))])
            msgs += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
        return [*msgs, {"role": "user", "content": b.rng.choice(pairs["alpaca"])[0]}]

    def rag():  # a document sized to land anywhere in the upper part of the range
        q = b.rng.choice(RAG_QUESTIONS)
        target = b.rng.randint(max(b.lo, (b.lo + b.hi) // 3), b.hi)

        def make(doc):
            return [{"role": "system", "content": RAG_SYSTEM}, {"role": "user", "content": f"{doc}\n\n{q}"}]

        return b.fit(make, b.passage(paras), target)

    recipes = [
        ("instruct", lambda: instruct("alpaca")),
        ("instruct", lambda: instruct("code", system=True)),
        ("instruct", lambda: instruct("gsm8k", system=True)),
        ("multi_turn", multi_turn),
        ("rag", rag),
    ]
    return _fill(n, b, recipes)


def copy_heavy_workload(
    tokenizer, n=32, prompt_tokens=(60, 600), max_tokens=(32, 128), seed=0, data_dir=None
):
    """``n`` requests whose answers copy from the prompt (prompt-lookup decoding's best case): quote or
    repeat part of a WikiText-2 passage, or return a Code Alpaca snippet with a variable renamed or
    comments added."""
    b = _Builder(tokenizer, prompt_tokens, max_tokens, seed)
    code = [a for _, a in _instructions(data_dir)["code"] if "\n" in a and "=" in a]
    paras = _paragraphs(data_dir)

    def quote():
        text = b.passage(paras)
        names = re.findall(r"\b[A-Z][a-z]{3,}\b", text[:2000]) or ["the"]
        ask = b.rng.choice(COPY_ASKS).format(name=b.rng.choice(names))
        target = b.rng.randint(max(b.lo, (b.lo + b.hi) // 3), b.hi)
        return b.fit(lambda doc: [{"role": "user", "content": f"Document:\n{doc}\n\n{ask}"}], text, target)

    def code_edit():
        snippet = b.rng.choice(code)
        names = sorted(set(re.findall(r"\b([A-Za-z_]\w*)\s*=[^=]", snippet)))
        if names and b.rng.random() < 0.6:
            old = b.rng.choice(names)
            ask = f"Rename the variable `{old}` to `{old}_renamed` and return the whole code."
        else:
            ask = "Add a comment to every line of this code and return the whole code."
        return [{"role": "user", "content": f"```\n{snippet}\n```\n\n{ask}"}]

    return _fill(n, b, [("quote", quote), ("code_edit", code_edit)])
