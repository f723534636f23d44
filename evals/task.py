"""A task is plain data: a JSONL file of records, and a ``TaskSpec`` saying how a record becomes a request.

Teaches what an evaluation harness actually sends to a model. A record becomes a *context* (an optional
description, ``num_fewshot`` solved examples, then the record's own prompt) and either

- a **multiple-choice** request: one ``(context, target_delimiter + choice)`` loglikelihood per choice, or
- a **generate-until** request: the context, stop strings and a token budget.

The strings are assembled exactly as lm-evaluation-harness assembles them (``lm_eval/api/task.py``:
``fewshot_context``; ``lm_eval/api/samplers.py``), so the same spec gives the same prompt in both. Templates
are Python ``str.format`` fields over the record (lm-eval's YAML uses Jinja: ``{{question}}`` there is
``{question}`` here). ``chat=True`` renders the few-shot examples as alternating user/assistant turns
through the tokenizer's chat template (lm-eval's ``--apply_chat_template --fewshot_as_multiturn``).

Few-shot examples come from ``fewshot_data`` (default: the task's own file, never the item itself).
``fewshot_sampler="first_n"`` takes the first ones, as lm-eval's ``first_n`` sampler; ``"random"`` draws
them with a generator seeded by ``(fewshot_seed, item id)``, so an item's prompt does not depend on which
other items run, or in what order: a resumed run rebuilds the same prompts.
"""

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

KINDS = ("multiple_choice", "generate_until")
SAMPLERS = ("first_n", "random")


@dataclass
class TaskSpec:
    """How to evaluate one JSONL file. ``metric`` names a scorer in :mod:`evals.metrics` (multiple choice
    always reports ``acc`` and ``acc_norm``)."""

    name: str
    data: str | Path  # JSONL, one record (a dict) per line
    kind: str = "multiple_choice"  # or "generate_until"
    template: str = "{question}"  # the prompt: str.format over a record
    target: str = "{answer}"  # generate_until: the reference (and the answer of a few-shot example)
    choices: str = "choices"  # multiple_choice: the record field with the list of choices
    gold: str = "gold"  # multiple_choice: the record field with the index of the right choice
    metric: str = "acc"
    num_fewshot: int = 0
    fewshot_data: str | Path | None = None  # default: ``data`` (an item is never its own example)
    fewshot_sampler: str = "first_n"
    fewshot_seed: int = 1234
    description: str = ""  # text before the examples (a system message when chat=True)
    target_delimiter: str = " "
    fewshot_delimiter: str = "\n\n"
    stop: tuple[str, ...] = ()  # generate_until: cut the generation at the first of these
    max_gen_toks: int = 256
    temperature: float = 0.0  # generate_until: 0 is greedy
    repeats: int = 1  # generate_until: samples per item (pass@k needs n > 1)
    chat: bool = False
    id_field: str = "id"
    version: str = "0"
    _records: list[dict] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.fewshot_sampler not in SAMPLERS:
            raise ValueError(f"fewshot_sampler must be one of {SAMPLERS}, got {self.fewshot_sampler!r}")
        if not isinstance(self.num_fewshot, int) or self.num_fewshot < 0:
            raise ValueError(f"num_fewshot must be an int >= 0, got {self.num_fewshot!r}")
        if not isinstance(self.max_gen_toks, int) or self.max_gen_toks < 1:
            raise ValueError(f"max_gen_toks must be a positive int, got {self.max_gen_toks!r}")
        if not isinstance(self.repeats, int) or self.repeats < 1:
            raise ValueError(f"repeats must be a positive int, got {self.repeats!r}")
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.repeats > 1 and self.temperature == 0:
            raise ValueError(f"repeats={self.repeats} greedy samples would all be equal; set temperature > 0")
        if isinstance(self.stop, str):
            raise TypeError(
                f"stop must be a tuple of strings, got the string {self.stop!r}; wrap it in a tuple"
            )
        self.stop = tuple(self.stop)
        if self.kind == "multiple_choice" and self.metric != "acc":
            raise ValueError(
                f"a multiple_choice task reports acc and acc_norm; metric must be 'acc', got {self.metric!r}"
            )
        self.data = Path(self.data)
        self.fewshot_data = self.data if self.fewshot_data is None else Path(self.fewshot_data)

    # -- records ----------------------------------------------------------------------------------------

    def records(self) -> list[dict]:
        """The test items, read once. Every record needs a unique ``id_field`` and the template's fields."""
        if self._records is None:
            self._records = read_jsonl(self.data)
            ids = [str(r.get(self.id_field, "")) for r in self._records]
            missing = [i for i, r in enumerate(self._records) if self.id_field not in r]
            if missing:
                raise ValueError(
                    f"{self.data}: record {missing[0]} has no {self.id_field!r} field (id_field)"
                )
            if len(set(ids)) != len(ids):
                dup = next(i for i in ids if ids.count(i) > 1)
                raise ValueError(f"{self.data}: id {dup!r} appears more than once; ids must be unique")
        return self._records

    def fewshot_records(self) -> list[dict]:
        return self.records() if self.fewshot_data == self.data else read_jsonl(self.fewshot_data)

    def fingerprint(self) -> str:
        """sha256 over the spec and the bytes of its files: a results file records it, and resuming into a
        file written by a different task (or different data) is refused."""
        h = hashlib.sha256()
        spec = {k: str(v) for k, v in sorted(vars(self).items()) if not k.startswith("_")}
        h.update(json.dumps(spec, sort_keys=True).encode())
        for path in sorted({self.data, self.fewshot_data}):
            h.update(Path(path).read_bytes())
        return h.hexdigest()

    # -- prompts ----------------------------------------------------------------------------------------

    def prompt(self, record: dict) -> str:
        return _format(self.template, record, "template")

    def answer(self, record: dict) -> str:
        """The text of the right answer: the gold choice, or the ``target`` template."""
        if self.kind == "multiple_choice":
            return self.choice_list(record)[self.gold_index(record)]
        return _format(self.target, record, "target")

    def choice_list(self, record: dict) -> list[str]:
        choices = record.get(self.choices)
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
            raise ValueError(f"record {record.get(self.id_field)!r}: {self.choices!r} must list >= 2 strings")
        return choices

    def gold_index(self, record: dict) -> int:
        gold, n = record.get(self.gold), len(self.choice_list(record))
        if isinstance(gold, bool) or not isinstance(gold, int) or not 0 <= gold < n:
            raise ValueError(
                f"record {record.get(self.id_field)!r}: {self.gold!r} must be an int in [0, {n})"
            )
        return gold

    def examples(self, record: dict) -> list[dict]:
        """The ``num_fewshot`` solved examples shown before ``record``."""
        if self.num_fewshot == 0:
            return []
        own = str(record[self.id_field])
        pool = [r for r in self.fewshot_records() if str(r.get(self.id_field)) != own]
        if len(pool) < self.num_fewshot:
            raise ValueError(
                f"num_fewshot={self.num_fewshot} but only {len(pool)} examples in {self.fewshot_data}"
            )
        if self.fewshot_sampler == "first_n":
            return pool[: self.num_fewshot]
        return random.Random(f"{self.fewshot_seed}:{own}").sample(pool, self.num_fewshot)

    def context(self, record: dict, chat_template=None) -> str:
        """The text a model continues. Plain: description, then each example as ``prompt + target_delimiter +
        answer`` joined by ``fewshot_delimiter``, then the record's prompt (lm-eval's ``fewshot_context``).
        Chat: the same turns through ``chat_template(messages) -> str`` (ending with the assistant's turn)."""
        shots = self.examples(record)
        if self.chat:
            if chat_template is None:
                raise ValueError(
                    f"task {self.name!r} has chat=True: the backend's tokenizer needs a chat template"
                )
            messages = [{"role": "system", "content": self.description}] if self.description else []
            for shot in shots:
                messages.append({"role": "user", "content": self.prompt(shot)})
                messages.append({"role": "assistant", "content": self.answer(shot)})
            messages.append({"role": "user", "content": self.prompt(record)})
            return chat_template(messages)
        text = self.description
        if shots:
            text += self.fewshot_delimiter.join(
                self.prompt(s) + self.target_delimiter + self.answer(s) for s in shots
            )
            text += self.fewshot_delimiter
        return text + self.prompt(record)

    def continuations(self, record: dict) -> list[str]:
        """multiple_choice: what is scored after the context, one string per choice."""
        return [self.target_delimiter + c for c in self.choice_list(record)]


def _format(template: str, record: dict, what: str) -> str:
    try:
        return template.format(**record)
    except KeyError as err:
        raise ValueError(
            f"the {what} {template!r} names the field {err.args[0]!r}, which record "
            f"{record.get('id')!r} lacks (fields: {sorted(record)})"
        ) from None


def read_jsonl(path) -> list[dict]:
    """Records of a JSONL file; a bad line raises naming the file and line number."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no task data at {path}")
    records = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{n}: not JSON ({err.msg})") from None
            if not isinstance(rec, dict):
                raise ValueError(f"{path}:{n}: a record must be a JSON object, got {type(rec).__name__}")
            records.append(rec)
    if not records:
        raise ValueError(f"{path} holds no records")
    return records
