"""gpt.tasks.translation: the Multi30k En->De CLI end to end at a tiny size, and its pieces.

No quality is asserted (five steps of a 1-layer model translate nothing); the smoke test checks that the
run trains, translates, and that its BLEU is sacreBLEU's score of the hypotheses it returns.
"""

import json
import subprocess
import sys

import pytest
import sacrebleu
import torch

from gpt.tasks.translation import Seq2SeqVocab, TranslationConfig, cli, load_pairs, pad_batch

pytestmark = pytest.mark.usefixtures("one_thread")


def test_cli_runs_end_to_end(data_file, tmp_path):
    data_file("multi30k", "train.en.gz")
    out = tmp_path / "summary.json"
    args = "--size micro --max-steps 5 --train-sentences 300 --vocab-size 400"
    args += f" --eval-sentences 12 --batch-size 8 --out {out}"
    summary = cli(args.split())
    assert summary["steps"] == 5
    assert len(summary["hypotheses"]) == 12
    _, refs = load_pairs("test_2016_flickr", 12)
    assert summary["bleu"] == pytest.approx(
        sacrebleu.corpus_bleu(summary["hypotheses"], [refs]).score, abs=0.01
    )
    assert 0.0 <= summary["bleu"] <= 100.0
    assert json.loads(out.read_text())["steps"] == 5


def test_module_entry_point():
    run = subprocess.run(
        [sys.executable, "-m", "gpt.tasks.translation", "--help"], capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stderr
    assert "--budget-minutes" in run.stdout and "--size" in run.stdout


def test_vocab_round_trip_and_padding(data_file):
    data_file("multi30k", "train.en.gz")
    en, de = load_pairs("val", 50)
    assert len(en) == len(de) == 50
    vocab = Seq2SeqVocab.train(en + de, 300)
    assert vocab.vocab_size == 300
    ids = vocab.encode(de[0])
    assert ids[-1] == vocab.eos_id and min(ids[:-1]) >= 4, "BPE ids sit above the 4 specials"
    assert vocab.decode([*ids, 7, 8]) == de[0], "decoding stops at EOS"
    batch, mask = pad_batch([[5, 6, 7], [9]], vocab.pad_id)
    assert batch.tolist() == [[5, 6, 7], [9, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert torch.equal(batch.masked_fill(mask == 0, -1)[1], torch.tensor([9, -1, -1]))


def test_bad_config_is_a_clear_error():
    with pytest.raises(ValueError, match="size='huge'"):
        TranslationConfig(size="huge")
    with pytest.raises(ValueError, match="budget_minutes > 0"):
        TranslationConfig(budget_minutes=0)
