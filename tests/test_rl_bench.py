"""rl.bench at smoke size: every part runs end to end (a tiny random GPT with SmolLM2's tokenizer, a handful
of HH pairs, chat conversations and GSM8K problems), writes bench.json and bench.png, and prints a table
made of the JSON's numbers. Flags parse; bad flags are refused with a message. No timing is asserted."""

import contextlib
import io
import json
import math

import pytest
import torch

from gpt.flags import parse_dataclass
from rl.bench import PARTS, BenchConfig, main, parse_args, smoke_config
from rl.bench.report import report, rows
from rl.preferences import HH_FILE

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, data_file, smollm2_file):
    data_file(*HH_FILE)  # a missing-data skip (red under LLM_COURSE_REQUIRE_DATA=1) rather than an error
    out = tmp_path_factory.mktemp("rl-bench")
    printed = io.StringIO()
    threads = torch.get_num_threads()  # module-scoped: the one_thread fixture has not run yet
    try:
        with contextlib.redirect_stdout(printed):
            result = main(smoke_config(out=str(out), threads=1))
    finally:
        torch.set_num_threads(threads)
    return result, out, printed.getvalue()


def test_the_bench_runs_every_part_and_writes_json_and_png(smoke_run):
    result, out, _ = smoke_run
    saved = json.loads((out / "bench.json").read_text())
    assert set(PARTS["preference"]) <= saved.keys()
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert saved["env"]["dtype"] == "fp32" and saved["env"]["threads"] == 1
    assert saved["pairs"]["train"] >= 2 and saved["pairs"]["val"] >= 2
    for key in ("accuracy", "accuracy_before"):
        assert 0.0 <= saved["reward"][key] <= 1.0
    assert len(saved["reward"]["r_chosen"]) == len(saved["reward"]["r_rejected"]) == saved["reward"]["n_val"]
    # LoRA starts at the reference: DPO's first loss is log 2 exactly, then the policy moves
    first = saved["dpo"]["history"][0]
    assert abs(first["loss"] - math.log(2)) < 1e-6 and first["reward_margin"] == 0.0
    assert saved["dpo"]["kl_full"] >= 0.0 and saved["dpo"]["kl_tokens"] > 0
    assert len(saved["dpo"]["history"]) == result["config"]["dpo_steps"]
    assert 0.0 <= saved["sft"]["exact_match"] <= 1.0 and saved["sft"]["n_test"] == 2
    assert saved["sft"]["val_loss"] != saved["sft"]["val_loss_before"]  # LoRA trained
    sft = saved["sft"]
    assert 1 <= sft["rows_packed"] <= sft["rows_unpacked"] == sft["n_train"]
    saved_share = 1 - sft["padding_packed"] * sft["rows_packed"] / (
        sft["padding_unpacked"] * sft["rows_unpacked"]
    )
    assert sft["padding_saved"] == pytest.approx(saved_share)
    bon, cfg = saved["best_of_n"], result["config"]
    assert [c["n"] for c in bon["curve"]] == [1, 2, 4] == [k for k in (1, 2, 4) if k <= cfg["bon_n"]]
    assert len(bon["scores"]) == cfg["bon_prompts"] and all(len(s) == cfg["bon_n"] for s in bon["scores"])
    for c in bon["curve"]:  # each point is the mean over prompts of the best of the first n samples
        assert c["score"] == pytest.approx(sum(max(s[: c["n"]]) for s in bon["scores"]) / len(bon["scores"]))
        assert c["kl_bound"] == pytest.approx(math.log(c["n"]) - (c["n"] - 1) / c["n"])


def test_a_saved_reward_model_is_evaluated_again_with_rm_from(smoke_run, tmp_path):
    """--rm-from loads the folder the reward part wrote and scores the same held-out pairs the same way."""
    result, out, _ = smoke_run
    folder = out / "reward_model"
    assert result["reward"]["saved_to"] == str(folder)
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        again = main(smoke_config(part="best_of_n", rm_from=str(folder), out=str(tmp_path), threads=1))
    loaded = again["reward"]
    assert loaded["loaded_from"] == str(folder) and loaded["train_s"] is None
    assert loaded["accuracy"] == result["reward"]["accuracy"]
    torch.testing.assert_close(torch.tensor(loaded["r_chosen"]), torch.tensor(result["reward"]["r_chosen"]))
    assert again["best_of_n"]["scores"] == result["best_of_n"]["scores"]  # same seed, same scorer
    assert "not trained in this run" in printed.getvalue()


def test_our_dpo_step_computes_trls_loss_on_the_same_batch(smoke_run):
    """Before timing, the bench compares the two steps' numbers: the loss (log 2 on both, policy =
    reference) and the mean completion log-probs (sums over ~30 tokens of a 49k vocabulary, about -300)."""
    trl = smoke_run[1].joinpath("bench.json").read_text()
    trl = json.loads(trl)["trl"]
    assert trl["loss_diff"] < 1e-6
    assert trl["logp_diff"] < 1e-3, f"mean completion log-probs differ from TRL's by {trl['logp_diff']:.2e}"
    assert len(trl["times"]["ours"]) == len(trl["times"]["trl"]) == smoke_config().iters
    assert trl["ratio"] == trl["trl_s"] / trl["ours_s"]


def test_the_printed_table_is_the_jsons_numbers(smoke_run):
    _, out, printed = smoke_run
    saved = json.loads((out / "bench.json").read_text())
    table = report(saved)
    assert table in printed  # the table printed is the one rebuilt from bench.json alone
    lines = printed.splitlines()
    named = rows(saved)
    n_curve = len(saved["best_of_n"]["curve"])
    assert len(named) == 4 + 7 + 1 + n_curve + 6  # reward model, DPO, best-of-n (greedy + curve), SFT
    for name, before, after in named:
        (line,) = [line for line in lines if line.startswith(name)]
        assert f"{after:10.4f}" in line and (before is None or f"{before:10.4f}" in line)
    assert f"{saved['trl']['ratio']:9.3f}x" in printed


def test_flags_parse_and_help_lists_every_knob(capsys):
    cfg = parse_args(["--part", "sft", "--sft-steps", "7", "--val-pairs", "none", "--threads", "2"])
    assert (cfg.part, cfg.sft_steps, cfg.val_pairs, cfg.threads) == ("sft", 7, None, 2)
    assert parse_args(["--smoke"]) == smoke_config()
    assert parse_args(["--smoke", "--rm-steps", "5"]).rm_steps == 5
    assert parse_args([]) == BenchConfig()
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    shown = capsys.readouterr().out
    for name in BenchConfig.__dataclass_fields__:
        assert f"--{name.replace('_', '-')}" in shown, name


def test_bad_flags_are_refused_with_a_message(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--part", "ppo"])
    assert "invalid choice: 'ppo'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--rm-steps", "many"])
    assert "--rm-steps" in capsys.readouterr().err
    with pytest.raises(ValueError, match="rm_steps must be >= 1, got 0"):
        parse_args(["--rm-steps", "0"])
    with pytest.raises(ValueError, match=r"sft_warmup=5 must be in 0\.\.sft_steps=2"):
        parse_dataclass(BenchConfig, ["--sft-steps", "2", "--sft-warmup", "5"])
    with pytest.raises(ValueError, match="val_fraction"):
        BenchConfig(val_fraction=1.0)
