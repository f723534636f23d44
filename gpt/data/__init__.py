"""gpt.data: the pre-training data pipeline (Week 4.1), from raw text to token shards and batches.

Reading order: ``sources`` (datasets, local files, train/val split) -> ``clean`` (unicode, OCR,
boilerplate) -> ``filters`` (Gopher quality rules, per-rule report) -> ``dedup`` (exact + MinHash/LSH)
-> ``mixture`` (epochs per source) -> ``tokenize`` (char / GPT-2 / bpe, the spec in meta.json) ->
``shards`` (uint16 files with a header) -> ``prepare`` (all of it, idempotent) -> ``loader``
(``ShardedLoader``, per-rank memmap batches) and ``dataset`` (the ``torch.utils.data`` path); the
benchmark of the two is ``python -m gpt.data.bench``. ``gsm8k`` reads the grade-school math problems that
fine-tuning, evaluation and RL share, with their answer checker; ``hh_rlhf`` reads the HH-RLHF
preference pairs that ``rl`` trains on and ``evals`` checks judges against.
"""

from gpt.data.clean import CleanConfig, clean_text
from gpt.data.dataset import TokenWindows
from gpt.data.dedup import MinHashConfig, exact_dedup, near_dedup, near_duplicate_pairs
from gpt.data.filters import FilterConfig, FilterReport, apply_filters
from gpt.data.gsm8k import GSM8KProblem, exact_match, extract_answer, final_answer, load_gsm8k
from gpt.data.loader import ShardedLoader
from gpt.data.mixture import mix_documents, sample_sources
from gpt.data.prepare import PreparedData, load_prepared, prepare
from gpt.data.shards import read_shard, write_shard
from gpt.data.sources import KNOWN_DATASETS, Corpus, load_corpus
from gpt.data.tokenize import CharTokenizer, gpt2_encoding, load_tokenizer

__all__ = [
    "KNOWN_DATASETS",
    "CharTokenizer",
    "CleanConfig",
    "Corpus",
    "FilterConfig",
    "FilterReport",
    "GSM8KProblem",
    "MinHashConfig",
    "PreparedData",
    "ShardedLoader",
    "TokenWindows",
    "apply_filters",
    "clean_text",
    "exact_dedup",
    "exact_match",
    "extract_answer",
    "final_answer",
    "gpt2_encoding",
    "load_corpus",
    "load_gsm8k",
    "load_prepared",
    "load_tokenizer",
    "mix_documents",
    "near_dedup",
    "near_duplicate_pairs",
    "prepare",
    "read_shard",
    "sample_sources",
    "write_shard",
]
