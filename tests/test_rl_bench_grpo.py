"""rl.bench --part grpo at smoke size: generation through LLMEngine against GPT.generate for the same groups,
a few GRPO steps through the engine, and the curves read from real R1 and s1 smoke runs written to a temporary
runs folder (or reported absent). Checks the JSON's keys, that every ratio and median is computed from the
timings and rows it stores, and that the printed table is the JSON's numbers. No timing is asserted."""

import contextlib
import io
import json
import shutil

import numpy as np
import pytest
import torch

from rl.bench import main, parse_args, smoke_config
from rl.bench.config import GEN_RATIO_TARGET
from rl.bench.grpo import STEP_KEYS, read_r1_runs, read_s1_curves
from rl.bench.report import report
from rl.r1 import R1Config, run_r1
from rl.s1 import S1RunConfig
from rl.s1 import main as s1_main

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, smollm2_file):
    runs = tmp_path_factory.mktemp("runs")
    out = tmp_path_factory.mktemp("rl-bench-grpo")
    threads = torch.get_num_threads()  # module-scoped: the one_thread fixture has not run yet
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            run_r1(R1Config(smoke=True, out_dir=str(runs / "rl-r1-3"), threads=1, verbose=False))
            (runs / "rl-r1-3-smoke").mkdir()  # not a seed's folder: never read
            shutil.copy(runs / "rl-r1-3" / "r1.json", runs / "rl-r1-3-smoke" / "r1.json")
            s1 = dict(
                smoke=True, n_train=2, n_samples=2, trace_budget=4, n_test=2, budgets=(4, 8), waits=(1,)
            )
            s1_main(S1RunConfig(**s1, ns=(1, 2), sft_steps=1, device="cpu", out_dir=str(runs / "s1")))
            printed.truncate(0)
            result = main(smoke_config(part="grpo", out=str(out), threads=1, runs_dir=str(runs)))
    finally:
        torch.set_num_threads(threads)
    return result, out, runs, printed.getvalue()


def test_the_grpo_part_writes_json_and_png_with_every_key(smoke_run):
    result, out, _, _ = smoke_run
    saved = json.loads((out / "bench.json").read_text())
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert saved["config"]["part"] == "grpo" and saved["env"]["threads"] == 1
    g = saved["grpo"]
    assert g.keys() >= {"generation", "target", "grpo", "curves", "seconds"}
    assert [r["target"] for r in g["generation"]] == [GEN_RATIO_TARGET, None]  # SmolLM2-like row, tiny R1 row
    cfg = result["config"]
    steps = g["grpo"]["history"]
    assert [h["step"] for h in steps] == list(range(1, cfg["grpo_steps"] + 1))
    for h in steps:
        assert set(STEP_KEYS) <= h.keys()  # beta > 0 logs kl; the correctness reward gives accuracy
        assert 0.0 <= h["accuracy"] <= 1.0 and 0.0 <= h["clip_region"] <= 1.0 and h["kl"] >= 0.0
        assert 1 <= h["completion_len"] <= cfg["grpo_tokens"]
    assert g["grpo"]["syncs"] == cfg["grpo_steps"]  # the engine got the policy's weights before each step
    assert 0.0 <= g["grpo"]["sync_s"] <= sum(h["gen_s"] for h in steps)  # pushes are inside generation
    assert g["curves"].keys() == {"this_run", "r1", "s1"}
    assert g["curves"]["this_run"]["reward"] == [h["reward_mean"] for h in steps]


def test_each_ratio_is_generate_over_engine_of_the_same_work(smoke_run):
    cfg = smoke_run[0]["config"]
    for row in smoke_run[0]["grpo"]["generation"]:
        assert row["ratio"] == row["generate_s"] / row["engine_s"]
        assert (
            row["engine_s"] == np.median(row["engine_times"])
            and len(row["engine_times"]) == cfg["ratio_repeats"]
        )
        assert row["generate_s"] == np.median(row["generate_times"])
        same = (
            cfg["ratio_prompts"] * cfg["ratio_group"] * cfg["ratio_tokens"]
        )  # no EOS: every sample runs out
        assert row["engine_tokens"] == row["generate_tokens"] == same


def test_medians_are_the_step_rows_medians(smoke_run):
    g = smoke_run[0]["grpo"]["grpo"]
    for k in STEP_KEYS:
        assert g["median"][k] == pytest.approx(np.median([h[k] for h in g["history"]]), rel=1e-12), k


def test_curves_are_read_from_the_runs_on_disk_and_labelled(smoke_run):
    result, _, runs, _ = smoke_run
    r1 = result["grpo"]["curves"]["r1"]
    path = runs / "rl-r1-3" / "r1.json"
    on_disk = json.loads(path.read_text())
    (run,) = r1["runs"]  # the -smoke folder is not a seed's
    assert run["seed"] == 3 and run["source"] == f"read from {path}" and r1["absent"] is None
    assert run["config"] == on_disk["config"] and run["reward"] == on_disk["reward"]
    assert run["accuracy_after"] == on_disk["accuracy_after"]
    s1 = result["grpo"]["curves"]["s1"]
    s1_disk = json.loads((runs / "s1" / "curves.json").read_text())
    assert s1["source"] == f"read from {runs / 's1' / 'curves.json'}" and s1["curves"] == s1_disk["curves"]
    assert s1["config"] == s1_disk["config"] and s1["model"] == "tiny-random-gpt"


def test_absent_and_broken_files_are_reported_not_invented(tmp_path):
    r1, s1 = read_r1_runs(tmp_path), read_s1_curves(tmp_path)
    assert r1["runs"] == [] and "rl-r1-<seed>/r1.json" in r1["absent"]
    assert s1["source"] is None and "not on disk" in s1["absent"]
    (tmp_path / "rl-r1-1").mkdir()
    (tmp_path / "rl-r1-1" / "r1.json").write_text('{"config": {}}')
    (tmp_path / "s1").mkdir()
    (tmp_path / "s1" / "curves.json").write_text("{not json")
    r1, s1 = read_r1_runs(tmp_path), read_s1_curves(tmp_path)
    assert r1["runs"] == [] and r1["absent"] is None and "KeyError" in r1["unreadable"][0]
    assert s1["source"] is None and "unreadable" in s1["absent"]


def test_the_printed_table_is_the_jsons_numbers(smoke_run):
    _, out, runs, printed = smoke_run
    saved = json.loads((out / "bench.json").read_text())
    table = report(saved)
    assert table in printed  # the table printed is the one rebuilt from bench.json alone
    lines = printed.splitlines()
    for row in saved["grpo"]["generation"]:
        (line,) = [line for line in lines if line.startswith(row["model"])]
        assert f"{row['engine_s']:9.3f} {row['generate_s']:10.3f} {row['ratio']:9.2f}x" in line
    g = saved["grpo"]["grpo"]
    for h in g["history"]:
        (line,) = [line for line in lines if line.startswith(f"{h['step']:6d} ")]
        assert all((f"{h[k]:9.2e}" if k == "kl" else f"{h[k]:9.3f}") in line for k in STEP_KEYS)
    (line,) = [line for line in lines if line.startswith("median")]
    median = g["median"]
    assert all((f"{median[k]:9.2e}" if k == "kl" else f"{median[k]:9.3f}") in line for k in STEP_KEYS)
    assert f"read from {runs / 'rl-r1-3' / 'r1.json'}" in printed
    assert f"read from {runs / 's1' / 'curves.json'}" in printed


def test_grpo_flags_parse_and_bad_ones_are_refused():
    cfg = parse_args(["--part", "grpo", "--grpo-steps", "2", "--ratio-repeats", "3", "--runs-dir", "x"])
    assert (cfg.part, cfg.grpo_steps, cfg.ratio_repeats, cfg.runs_dir) == ("grpo", 2, 3, "x")
    with pytest.raises(ValueError, match="grpo_group >= 2"):
        parse_args(["--part", "grpo", "--grpo-group", "1"])
    with pytest.raises(ValueError, match="ratio_tokens must be >= 1, got 0"):
        parse_args(["--ratio-tokens", "0"])
    with pytest.raises(SystemExit):
        parse_args(["--grpo-task", "chess"])
