"""Where the course's datasets live: one environment variable, one function.

Every dataset the course reads (tinyshakespeare, wikitext2, GSM8K, the GPT-2 BPE ranks, ...) sits
under a single root folder named by ``LLM_COURSE_DATA`` (default ``~/.cache/llm-course``), one
sub-folder per dataset, as laid out in the course's shared data folder. Code that can download a
dataset checks here first, so everything works offline once the files are in place. What is derived
from the data (tokenized shards) goes to a separate writable folder, ``LLM_COURSE_CACHE`` (default
``~/.cache/llm-course/derived``).
"""

import os
from pathlib import Path

DATA_ENV_VAR = "LLM_COURSE_DATA"
DEFAULT_DATA_ROOT = "~/.cache/llm-course"
CACHE_ENV_VAR = "LLM_COURSE_CACHE"
DEFAULT_CACHE_ROOT = "~/.cache/llm-course/derived"


def data_root() -> Path:
    """The folder that holds the course's datasets (it may not exist yet)."""
    return Path(os.environ.get(DATA_ENV_VAR) or DEFAULT_DATA_ROOT).expanduser()


def cache_root() -> Path:
    """A writable folder for files derived from the data (tokenized shards), ``LLM_COURSE_CACHE``.

    Kept apart from :func:`data_root` on purpose: the data folder may be a shared, read-only copy.
    """
    return Path(os.environ.get(CACHE_ENV_VAR) or DEFAULT_CACHE_ROOT).expanduser()


def dataset_path(*parts: str) -> Path:
    """Path of a file or folder under the data root; raises FileNotFoundError naming the fix if absent."""
    path = data_root().joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(
            f"dataset file {path} not found. Put the course data under {data_root()} "
            f"or point {DATA_ENV_VAR} at the folder that holds '{parts[0]}/'."
        )
    return path
