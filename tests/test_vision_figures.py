"""vision.figures: each picture is drawn from the numbers it is given (no pyplot state left behind)."""

import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from gpt import prefix_lm_mask
from vision import figures
from vision.shapes import make_split


def _result(curve, final, seconds=100.0):
    return {"params": 1234, "tokens_per_image": 16, "steps": 10, "train_seconds": seconds, "curve": curve,
            "final": final}  # fmt: skip


def _scores(caption):
    return {"caption": caption, "counting": 0.5, "colour": 1.0, "spatial": None}


def test_first_reaching_by_hand():
    curve = [{"train_seconds": 10.0, **_scores(0.5)}, {"train_seconds": 20.0, **_scores(0.96)}]
    assert figures.first_reaching(_result(curve, _scores(0.97)), "caption", 0.95) == 20.0
    assert figures.first_reaching(_result(curve[:1], _scores(0.97)), "caption", 0.95) == 100.0  # the final
    assert figures.first_reaching(_result(curve[:1], _scores(0.9)), "caption", 0.95) is None


def test_fusion_table_and_figure():
    results = {"late": _result([{"train_seconds": 30.0, **_scores(0.96)}], _scores(0.98)),
               "early": _result([], _scores(0.5))}  # fmt: skip
    table = figures.fusion_table(results).splitlines()
    assert len(table) == 3 and "95% cap at" in table[0]
    assert table[1].split()[:5] == ["late", "1,234", "16", "10", "100"]
    assert "98.0%" in table[1] and table[1].endswith("30 s") and table[2].endswith("never")
    assert table[1].split()[-3] == "-"  # spatial None
    fig = figures.fusion_figure(results)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert len(fig.axes[0].lines) == 3  # one curve per model + the target line


def test_mask_and_diagram():
    fig = figures.mask_figure(prefix_lm_mask(7, 4), n_image=2, n_prefix=2)
    assert "34 of 49" in fig.axes[0].get_title()  # the 4 x 4 prefix block + suffix rows of 5, 6 and 7 keys
    assert len(figures.fusion_diagram().axes) == 2


def test_shapes_grid_and_attention():
    samples = make_split("test", 3, seed=0)
    fig = figures.shapes_grid(samples, cols=2)
    assert len(fig.axes) == 4 and fig.axes[0].get_title().startswith(samples[0].caption)
    maps = torch.zeros(2, 2, 16)
    maps[:, 0, 5] = 0.5  # word 0: half its attention on patch 5
    fig = figures.attention_figure(samples[0].image, maps, ["a", "<eos>"], patch_size=8)
    assert len(fig.axes) == 3 and "50% on image" in fig.axes[1].get_title()
    heat = fig.axes[1].images[1].get_array()
    assert heat.shape == (32, 32) and heat[8:16, 8:16].min() == 0.5 and heat.sum() == 0.5 * 64
    with pytest.raises(ValueError, match="square grid"):
        figures.attention_figure(samples[0].image, np.zeros((1, 1, 15)), ["a"], patch_size=8)


def test_no_pyplot_figures_are_left_open():
    plt = pytest.importorskip("matplotlib.pyplot")
    before = len(plt.get_fignums())
    figures.fusion_diagram()
    assert len(plt.get_fignums()) == before and matplotlib.get_backend()
