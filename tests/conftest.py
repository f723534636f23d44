"""Shared test plumbing: markers, the data folder, and the rule that CI never skips for missing data.

- ``@pytest.mark.slow`` tests are excluded by default (``pyproject.toml`` adds ``-m 'not slow'``);
  run them with ``pytest -m slow``.
- ``@pytest.mark.gpu`` tests are skipped when no CUDA device is present; run them with ``pytest -m gpu``.
- Without a CUDA driver, ``TRITON_INTERPRET=1`` is set so Triton kernels run (slowly) on the CPU.
- ``data_file("tinyshakespeare", "input.txt")`` returns a dataset path or skips with a reason that
  starts with ``MISSING_DATA``. With ``LLM_COURSE_REQUIRE_DATA=1`` (set by ``.ci/run``) every such
  skip turns the whole run red, because CI has all the data.
"""

import gc
import os
import shutil

# Triton kernels run on the CPU through Triton's interpreter; it must be chosen before triton is
# imported. Without a CUDA driver there is nothing else to run them on.
if shutil.which("nvidia-smi") is None:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
import torch
from hypothesis import settings

from gpt.data.paths import DATA_ENV_VAR, data_root

MISSING_DATA = "missing data:"

# CI replays the same examples every run (no flaky first-time failures, no example database on disk);
# locally hypothesis explores new examples each run.
settings.register_profile("ci", derandomize=True, database=None, deadline=None)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture
def one_thread():
    """One intra-op thread for tiny models: faster than two threads fighting over CI's two cores.

    Opt in per module with ``pytestmark = pytest.mark.usefixtures("one_thread")``; restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def cycle_gc_paused():
    """Pause Python's cycle collector while a test builds hundreds of thousands of micrograd Values.

    The collector walks every live Value again and again (2-3x the time); a Value graph has no cycles,
    so reference counting alone frees it."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


TINY_HF_CONFIGS = {
    # GPT-2: learned positions, LayerNorm with biases, GELU-tanh, fused QKV (Conv1D), tied head
    "gpt2": dict(vocab_size=97, n_positions=64, n_embd=32, n_layer=2, n_head=4),
    # Llama: RoPE (base 500, so positions matter within 64 tokens), RMSNorm, SwiGLU, GQA 6 -> 2, untied head
    "llama": dict(
        vocab_size=97,
        hidden_size=48,
        intermediate_size=80,
        num_hidden_layers=2,
        num_attention_heads=6,
        num_key_value_heads=2,
        max_position_embeddings=64,
        rope_parameters={"rope_type": "default", "rope_theta": 500.0},
    ),
}


@pytest.fixture(scope="session")
def tiny_hf():
    """``tiny_hf(family, **config)``: a small random Hugging Face causal LM (``"gpt2"`` or ``"llama"``).

    Seeded, in eval mode, with ``TINY_HF_CONFIGS[family]`` updated by ``config``. Biases and norm gains are
    drawn at random too, so a converter that drops or swaps one changes the logits. Greedy ``generate``
    never stops early (no EOS), as random weights would emit token 0 at any time.
    """
    transformers = pytest.importorskip("transformers")
    classes = {
        "gpt2": (transformers.GPT2Config, transformers.GPT2LMHeadModel),
        "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
    }

    def build(family: str, seed: int = 0, **config):
        config_cls, model_cls = classes[family]
        torch.manual_seed(seed)
        hf = model_cls(config_cls(**{**TINY_HF_CONFIGS[family], **config}))
        with torch.no_grad():
            for name, p in hf.named_parameters():
                if p.dim() == 1:
                    p.normal_(mean=1.0 if "norm" in name or "ln" in name else 0.0, std=0.1)
        hf.generation_config.eos_token_id = None
        hf.generation_config.pad_token_id = 0
        return hf.eval()

    return build


@pytest.fixture(scope="session")
def hf_greedy():
    """``hf_greedy(hf, prompts, new) -> list[list[int]]``: HF ``generate``'s greedy continuation of each
    prompt (a list of ids), one prompt at a time: the reference the engine tests compare tokens with."""

    @torch.no_grad()
    def run(hf, prompts, new):
        refs = []
        for p in prompts:
            x = torch.tensor([p])
            out = hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=new, do_sample=False)
            refs.append(out[0, len(p) :].tolist())
        return refs

    return run


@pytest.fixture(scope="session")
def data_dir():
    """The course data root (``$LLM_COURSE_DATA``, default ``~/.cache/llm-course``)."""
    return data_root()


@pytest.fixture(scope="session")
def data_file(data_dir):
    """``data_file(*parts)`` -> an existing path under the data root, or a skip naming what is missing."""

    def find(*parts):
        path = data_dir.joinpath(*parts)
        if not path.exists():
            pytest.skip(f"{MISSING_DATA} {path} (set {DATA_ENV_VAR} to the course data folder)")
        return path

    return find


@pytest.fixture(scope="session")
def multi30k_test(data_file):
    """test_2016_flickr (1,000 sentences): English, German, and each with seeded perturbations (a word
    dropped and/or two neighbours swapped): hypotheses near their references, for the text metrics."""
    import random

    from gpt.tasks.translation import load_pairs

    data_file("multi30k", "test_2016_flickr.en.gz")
    data_file("multi30k", "test_2016_flickr.de.gz")
    en, de = load_pairs("test_2016_flickr")

    def perturb(sentences, seed):
        rng, out = random.Random(seed), []
        for sentence in sentences:
            words = sentence.split()
            if len(words) > 2 and rng.random() < 0.6:
                del words[rng.randrange(len(words))]
            if len(words) > 2 and rng.random() < 0.6:
                i = rng.randrange(len(words) - 1)
                words[i], words[i + 1] = words[i + 1], words[i]
            out.append(" ".join(words))
        return out

    return {"en": en, "de": de, "en_hyp": perturb(en, 0), "de_hyp": perturb(de, 0)}


@pytest.fixture(scope="session")
def smollm2_file(data_file):
    """The shipped SmolLM2-135M-Instruct GGUF (Q4_1), or a missing-data skip."""
    return data_file("smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")


@pytest.fixture(scope="session")
def smollm2(smollm2_file):
    """``(model, tokenizer)``: SmolLM2-135M-Instruct in our GPT (fp32, eval), loaded once per test run.

    Shared by every test that needs the real model: do not modify it in place (copy.deepcopy it first)."""
    from quant.load import load_gguf

    return load_gguf(smollm2_file)


@pytest.fixture(scope="session")
def smollm2_hf(smollm2_file):
    """The same file through transformers' own GGUF loader: the reference LlamaForCausalLM (fp32, eval)."""
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoModelForCausalLM.from_pretrained(smollm2_file.parent, gguf_file=smollm2_file.name)
    return hf.eval()


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    reports = reporter.stats.get("skipped", []) if reporter else []
    skipped = [r.nodeid for r in reports if MISSING_DATA in str(r.longrepr)]
    if skipped and os.environ.get("LLM_COURSE_REQUIRE_DATA") == "1":
        names = "\n  ".join(skipped)
        print(f"\nLLM_COURSE_REQUIRE_DATA=1 but {len(skipped)} test(s) skipped for missing data:\n  {names}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_addoption(parser):
    parser.addoption(
        "--full-size",
        action="store_true",
        default=False,
        help="run notebooks at full size (LLM_COURSE_SMOKE=0) instead of the CI smoke size",
    )
