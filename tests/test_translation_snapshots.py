"""gpt.tasks.translation.train(snapshot_fractions=...): copies of the weights along one run.

Checked on a step-limited micro run: each snapshot is taken at the first step past its share of
``max_steps``, holds copies (later steps do not change it), differs from the final weights, and taking
snapshots leaves the training itself bit-identical to a run without them.
"""

import math

import pytest
import torch

from gpt.tasks.translation import TranslationConfig, build_model, train

pytestmark = pytest.mark.usefixtures("one_thread")

CFG = dict(size="micro", max_steps=8, train_sentences=200, vocab_size=300, batch_size=4, dropout=0.0)


def test_snapshots_along_a_run(data_file):
    data_file("multi30k", "train.en.gz")
    cfg = TranslationConfig(**CFG)
    plain, _, plain_stats = train(cfg)
    assert "snapshots" not in plain_stats, "no snapshots unless asked for"
    model, vocab, stats = train(cfg, snapshot_fractions=(0.5, 0.25, 0.6))
    snaps = stats["snapshots"]
    assert [s["fraction"] for s in snaps] == [0.25, 0.5, 0.6]
    assert [s["step"] for s in snaps] == [math.ceil(f * cfg.max_steps) for f in (0.25, 0.5, 0.6)]
    final = model.state_dict()
    for k, v in plain.state_dict().items():
        assert torch.equal(v, final[k]), f"{k}: snapshots changed the training"
    for s in snaps:
        assert s["state_dict"].keys() == final.keys()
        assert any(not torch.equal(s["state_dict"][k], final[k]) for k in final), f"step {s['step']} = final"
    assert any(not torch.equal(snaps[0]["state_dict"][k], snaps[1]["state_dict"][k]) for k in final)
    restored = build_model(cfg, vocab)
    restored.load_state_dict(snaps[0]["state_dict"])
    restored.eval()
    src = torch.tensor([[5, 6, 7, vocab.eos_id]])
    tgt = torch.tensor([[vocab.pad_id, 8, 9]])
    logits, _ = restored(src, tgt)
    model.eval()
    assert not torch.allclose(logits, model(src, tgt)[0]), "an early snapshot predicts like the final model"


def test_snapshots_do_not_depend_on_each_other(data_file):
    """Asking for more snapshots does not move one: the weights at step 3 are the same either way."""
    data_file("multi30k", "train.en.gz")
    cfg = TranslationConfig(**{**CFG, "max_steps": 4})
    _, _, a = train(cfg, snapshot_fractions=(0.75,))
    _, _, b = train(cfg, snapshot_fractions=(0.5, 0.75))
    assert a["snapshots"][0]["step"] == b["snapshots"][1]["step"] == 3
    for k, v in a["snapshots"][0]["state_dict"].items():
        assert torch.equal(v, b["snapshots"][1]["state_dict"][k])


@pytest.mark.parametrize("bad", [(0.0,), (1.0,), (0.5, 0.5), (-0.1,)])
def test_bad_fractions_are_a_clear_error(bad):
    with pytest.raises(ValueError, match="snapshot_fractions"):
        train(TranslationConfig(size="micro", max_steps=1), snapshot_fractions=bad)
