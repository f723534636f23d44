"""rl.s1_tiny: the tiny R1 model's test-time scaling curves, read from a ``python -m rl.r1`` folder.

References: the "after GRPO" model's weights equal the trainer's checkpoint tensor for tensor, the
pre-trained one the pre-training checkpoint's; the curves' own invariants (thinking within each cap, the
votes' tokens growing with n) on a smoke run.
"""

import json

import pytest
import torch

from gpt.training.checkpoint import load_checkpoint
from rl.r1 import R1Config, run_r1
from rl.s1_tiny import TinyScalingConfig, load_models, run

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def r1_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("r1")
    run_r1(R1Config(smoke=True, threads=1, out_dir=str(out), verbose=False))
    return out


def test_loads_both_models_of_a_run(r1_dir):
    loaded = load_models(r1_dir)
    assert set(loaded["models"]) == {"pre-trained", "after GRPO"}
    saved = load_checkpoint(r1_dir / "grpo" / "grpo.pt")["model"]
    after = dict(loaded["models"]["after GRPO"].named_parameters())
    assert all(torch.equal(after[k], v) for k, v in saved.items())
    pre = load_checkpoint(r1_dir / "pretrained.pt")["model"]
    before = loaded["models"]["pre-trained"].state_dict()
    assert before.keys() == pre.keys() and all(torch.equal(before[k], v) for k, v in pre.items())


def test_curves_of_both_models_are_written(r1_dir):
    cfg = TinyScalingConfig(run_dir=str(r1_dir), n_test=6, budgets=(2, 8), waits=(1,), ns=(1, 3), threads=1)
    result = run(cfg)
    saved = json.loads((r1_dir / "scaling.json").read_text())
    assert (r1_dir / "scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert saved["curves"].keys() == result["curves"].keys() == {"pre-trained", "after GRPO"}
    for curves in result["curves"].values():
        seq, par = curves["sequential"], curves["parallel"]
        assert [(p["budget"], p["waits"]) for p in seq] == [(2, 0), (8, 0), (8, 1)]
        assert all(p["thinking"] <= p["budget"] for p in seq)
        assert [p["n"] for p in par] == [1, 3] and par[1]["tokens"] > par[0]["tokens"]


def test_smoke_needs_no_run_folder(tmp_path):
    cfg = TinyScalingConfig(run_dir=str(tmp_path / "absent"), smoke=True, n_test=2, budgets=(4,), waits=(),
                            ns=(1,), threads=1)  # fmt: skip
    assert set(run(cfg)["curves"]) == {"untrained"}
    assert not (tmp_path / "absent").exists()


def test_a_folder_without_a_run_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"pretrained\.pt not found"):
        load_models(tmp_path)
