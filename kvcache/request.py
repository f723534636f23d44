"""What a caller asks for and gets back: ``SamplingParams``, the engine's ``Sequence`` state, ``Output``.

Teaches the lifecycle of a request in a serving engine: it waits, runs (prefill, then one token per
decode step; its ``n`` samples share the prefilled prompt), may be preempted back to waiting (its
blocks freed, to be recomputed later), and
finishes on a stop token, on ``max_tokens``, at the model's context length, or aborted with an error
that leaves the other requests untouched. Sampling follows :func:`gpt.sampling.sample_next`
(temperature, then top-k, then top-p, HF's order); each request may carry its own seed, so its samples
do not depend on what else is in the batch.

References: vLLM ``sampling_params.py`` (``SamplingParams``), ``outputs.py`` (``RequestOutput``),
``sequence.py``; nano-vllm ``engine/sequence.py``.
"""

import enum
import time
from dataclasses import dataclass, field

import torch


@dataclass
class SamplingParams:
    """How to pick tokens for one request. ``temperature=0`` is greedy."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    max_tokens: int = 16
    stop_token_ids: tuple[int, ...] = ()
    stop: tuple[str, ...] = ()  # finish once the output text contains one (needs the engine's tokenizer)
    seed: int | None = None  # a private torch.Generator for this request (None: torch's global RNG)
    n: int = 1  # samples per request: the prompt is prefilled once, then forked (its blocks shared)

    def __post_init__(self):
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)):
            raise TypeError(f"temperature must be a number, got {self.temperature!r}")
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k is not None and (not isinstance(self.top_k, int) or self.top_k < 1):
            raise ValueError(f"top_k must be a positive int or None, got {self.top_k!r}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1] or None, got {self.top_p}")
        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise ValueError(f"max_tokens must be a positive int, got {self.max_tokens!r}")
        self.stop_token_ids = tuple(self.stop_token_ids)
        if not all(isinstance(t, int) and t >= 0 for t in self.stop_token_ids):
            raise ValueError(f"stop_token_ids must be non-negative ints, got {self.stop_token_ids!r}")
        if isinstance(self.stop, str) or not all(isinstance(t, str) and t for t in self.stop):
            raise ValueError(f"stop must be a tuple of non-empty strings, got {self.stop!r}")
        self.stop = tuple(self.stop)
        if self.seed is not None and not isinstance(self.seed, int):
            raise TypeError(f"seed must be an int or None, got {self.seed!r}")
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"n must be a positive int, got {self.n!r}")


class Status(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass
class Sequence:
    """The engine's state for one sequence: one sample of a request (``index`` of ``params.n``).

    ``token_ids`` is one list, prompt then outputs, that grows by :meth:`append_token` (as nano-vllm's
    ``Sequence``): the scheduler and block manager read it every step, so it is never rebuilt.
    """

    seq_id: int
    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    generator: torch.Generator | None = None
    index: int = 0  # which of the request's n samples
    forks: int = 0  # samples still to fork from this one once its prompt is computed
    token_ids: list[int] = field(init=False)  # prompt + outputs
    status: Status = Status.WAITING
    num_computed_tokens: int = 0  # tokens whose K/V are in the cache
    prefill_end: int = 0  # tokens to prefill since admission (the prompt, plus outputs after preemption)
    num_cached_tokens: int = 0  # of those, how many came from the prefix cache at admission
    num_preemptions: int = 0
    finish_reason: str | None = None  # "stop" | "length" | "abort"
    error: str | None = None
    arrival_time: float = field(default_factory=time.perf_counter)
    first_token_time: float | None = None
    finish_time: float | None = None

    def __post_init__(self):
        self.prompt_token_ids = list(self.prompt_token_ids)
        self.token_ids = list(self.prompt_token_ids)

    def append_token(self, token_id: int):
        self.token_ids.append(token_id)

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - len(self.prompt_token_ids)

    @property
    def output_token_ids(self) -> list[int]:
        """The generated tokens (a new list)."""
        return self.token_ids[len(self.prompt_token_ids) :]

    def __len__(self) -> int:
        return len(self.token_ids)


@dataclass
class Output:
    """A request's result (or, from ``LLMEngine.step``, its state so far)."""

    request_id: str
    prompt_token_ids: list[int]
    token_ids: list[int]  # generated tokens only
    finished: bool
    index: int = 0  # which of the request's ``SamplingParams.n`` samples
    finish_reason: str | None = None
    error: str | None = None
    text: str | None = None  # decoded ``token_ids`` when the engine has a tokenizer
    num_cached_tokens: int = 0  # prompt tokens served by the prefix cache (last admission)
    num_preemptions: int = 0
    ttft_s: float | None = None  # arrival -> first token
    latency_s: float | None = None  # arrival -> finish

    @classmethod
    def of(cls, seq: Sequence, tokenizer=None) -> "Output":
        done = seq.status is Status.FINISHED
        outputs = seq.output_token_ids
        return cls(
            request_id=seq.request_id,
            prompt_token_ids=list(seq.prompt_token_ids),
            token_ids=outputs,
            finished=done,
            index=seq.index,
            finish_reason=seq.finish_reason,
            error=seq.error,
            text=tokenizer.decode(outputs) if tokenizer is not None else None,
            num_cached_tokens=seq.num_cached_tokens,
            num_preemptions=seq.num_preemptions,
            ttft_s=None if seq.first_token_time is None else seq.first_token_time - seq.arrival_time,
            latency_s=None if seq.finish_time is None else seq.finish_time - seq.arrival_time,
        )
