"""Bottleneck adapters (Houlsby et al. 2019): a small trainable MLP after attention and after the FFN.

Teaches the first parameter-efficient method: keep the pretrained model frozen and insert, inside every
block, a bottleneck ``h + W_up act(W_down h)`` that squeezes the width C down to m << C and back. Each
block gets two, one on the attention output and one on the FFN output, before the residual add:

    x = x + adapter_attn(attn(ln_1(x)))
    x = x + adapter_mlp(mlp(ln_2(x)))

``W_up`` starts at zero, so at initialisation every adapter is the identity and the adapted model is the
base model exactly; training moves it away. Unlike LoRA, which adds a low-rank update *parallel* to a
weight (and so merges back into it), an adapter sits *in series* behind a nonlinearity: it cannot be
merged, and it costs extra layers at inference. Each adapter has ``2 C m + m + C`` parameters.

The paper also trains the layer norms (``train_norms=True`` here); its near-identity init draws both
projections from a normal with std 1e-2 truncated at two std, where we zero the up projection so the
identity is exact. The nonlinearity follows google-research/adapter-bert ``modeling.py``
``feedforward_adapter`` (GELU).

References: Houlsby et al. 2019, "Parameter-Efficient Transfer Learning for NLP", section 2.1 and
figure 2; google-research/adapter-bert ``modeling.py``.
"""

from dataclasses import dataclass

from torch import Tensor, nn

from gpt.attention import CacheStep
from gpt.feedforward import ACTIVATIONS, GATED
from gpt.model import GPT, Block, GPTConfig

PLAIN_ACTIVATIONS = tuple(a for a in ACTIVATIONS if a not in GATED)


@dataclass
class AdapterConfig:
    """Shape and init of every adapter: width ``n_embd`` -> ``bottleneck`` -> ``n_embd``."""

    n_embd: int
    bottleneck: int = 64
    activation: str = "gelu"  # any plain activation of gpt.feedforward
    init_std: float = 1e-2  # std of the down projection (truncated at 2 std, as adapter-bert)
    train_norms: bool = False  # Houlsby et al. also train every layer norm

    def __post_init__(self):
        if not isinstance(self.bottleneck, int) or not 1 <= self.bottleneck <= self.n_embd:
            raise ValueError(
                f"bottleneck={self.bottleneck!r} must be an int in 1..n_embd={self.n_embd}: the adapter "
                "squeezes the width down, so a wider bottleneck defeats it"
            )
        if self.activation not in PLAIN_ACTIVATIONS:
            raise ValueError(f"activation={self.activation!r}; choose one of {PLAIN_ACTIVATIONS}")
        if not self.init_std > 0:
            raise ValueError(f"init_std must be positive, got {self.init_std}")


class Bottleneck(nn.Module):
    """h (..., C) -> h + up(act(down(h))): the identity at init, since ``up`` is zero."""

    def __init__(self, config: AdapterConfig):
        super().__init__()
        self.act = ACTIVATIONS[config.activation]
        self.down = nn.Linear(config.n_embd, config.bottleneck)
        self.up = nn.Linear(config.bottleneck, config.n_embd)
        std = config.init_std
        nn.init.trunc_normal_(self.down.weight, std=std, a=-2 * std, b=2 * std)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: Tensor) -> Tensor:
        return h + self.up(self.act(self.down(h)))  # (..., m) inside, (..., C) out


class AdapterBlock(nn.Module):
    """A :class:`gpt.model.Block` with a bottleneck behind its attention and behind its FFN.

    It takes over the block's own modules under the same names (``ln_1``, ``attn``, ``ln_2``, ``mlp``), so
    the base weights keep their state-dict keys and the adapters add ``adapter_attn.*``, ``adapter_mlp.*``.
    """

    def __init__(self, block: Block, config: AdapterConfig):
        super().__init__()
        self.ln_1, self.attn, self.ln_2, self.mlp = block.ln_1, block.attn, block.ln_2, block.mlp
        self.adapter_attn = Bottleneck(config)
        self.adapter_mlp = Bottleneck(config)

    def forward(
        self, x: Tensor, positions: Tensor, step: CacheStep | None = None, cache=None, rope=None
    ) -> Tensor:
        x = x + self.adapter_attn(self.attn(self.ln_1(x), positions, step, cache, rope))  # (B, T, C)
        return x + self.adapter_mlp(self.mlp(self.ln_2(x)))


def adapter_param_count(config: GPTConfig, bottleneck: int, train_norms: bool = False) -> int:
    """Trainable parameters after :func:`inject_adapters`: two ``2 C m + m + C`` adapters per layer, plus
    the layer norms (two per block and the final one) with ``train_norms``."""
    C, L = config.n_embd, config.n_layer
    count = L * 2 * (2 * C * bottleneck + bottleneck + C)
    if train_norms:
        per_norm = 2 * C if config.norm == "layernorm" and config.bias else C  # gain (+ bias)
        count += (2 * L + 1) * per_norm
    return count


def inject_adapters(
    model: GPT,
    bottleneck: int = 64,
    activation: str = "gelu",
    init_std: float = 1e-2,
    train_norms: bool = False,
) -> GPT:
    """Freeze ``model`` and replace each block by an :class:`AdapterBlock`, in place; returns the model.

    Only the adapters (and the layer norms with ``train_norms``) keep ``requires_grad``; the down
    projections are drawn from torch's global generator. The adapted model equals the base exactly until
    the adapters are trained.
    """
    if not isinstance(model, GPT):
        raise TypeError(f"inject_adapters expects a gpt.GPT, got {type(model).__name__}")
    if any(isinstance(b, AdapterBlock) for b in model.h):
        raise ValueError("this model already has adapters; inject them into a fresh copy of the base model")
    config = AdapterConfig(model.config.n_embd, bottleneck, activation, init_std, train_norms)
    model.requires_grad_(False)
    if train_norms:
        for block in model.h:
            block.ln_1.requires_grad_(True)
            block.ln_2.requires_grad_(True)
        model.ln_f.requires_grad_(True)
    weight = model.wte.weight
    for i, block in enumerate(model.h):
        adapted = AdapterBlock(block, config).to(device=weight.device, dtype=weight.dtype)
        model.h[i] = adapted.train(model.training)
    return model
