"""The harness itself: the data rule and the markers behave as conftest.py documents."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gpt.data.paths import cache_root, dataset_path


def run_pytest(tmp_path, test_source, env_extra):
    (tmp_path / "test_probe.py").write_text(textwrap.dedent(test_source))
    conftest = Path(__file__).with_name("conftest.py")
    (tmp_path / "conftest.py").write_text(conftest.read_text())
    env = {**os.environ, **env_extra}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )


PROBE = """
def test_needs_data(data_file):
    data_file("no-such-dataset", "file.txt")
"""


def test_missing_data_skips_locally(tmp_path):
    result = run_pytest(tmp_path, PROBE, {"LLM_COURSE_DATA": str(tmp_path), "LLM_COURSE_REQUIRE_DATA": "0"})
    assert result.returncode == 0, result.stdout
    assert "1 skipped" in result.stdout
    assert "missing data:" in result.stdout


def test_missing_data_fails_when_required(tmp_path):
    result = run_pytest(tmp_path, PROBE, {"LLM_COURSE_DATA": str(tmp_path), "LLM_COURSE_REQUIRE_DATA": "1"})
    assert result.returncode == 1, result.stdout
    assert "skipped for missing data" in result.stdout


def test_dataset_path_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_COURSE_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="LLM_COURSE_DATA"):
        dataset_path("tinyshakespeare", "input.txt")


def test_data_dir_points_at_env(data_dir):
    expected = os.path.expanduser(os.environ.get("LLM_COURSE_DATA") or "~/.cache/llm-course")
    assert str(data_dir) == expected


def test_cache_root_is_apart_from_a_shared_data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_COURSE_DATA", str(tmp_path / "shared"))
    monkeypatch.delenv("LLM_COURSE_CACHE", raising=False)
    assert not str(cache_root()).startswith(str(tmp_path))
    monkeypatch.setenv("LLM_COURSE_CACHE", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"
