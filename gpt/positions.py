"""Four ways to tell attention where a token sits: learned, sinusoidal, rotary (RoPE) and ALiBi.

Attention by itself is blind to order (permute the keys and values together and nothing changes).
GPT-2 adds a learned vector per position to the token embedding; the original transformer adds a fixed
sinusoid (Vaswani et al. 2017, section 3.5); RoPE rotates each (query, key) pair of channels by an angle
proportional to the position, so that q.k depends only on the distance (Su et al. 2021, "RoFormer");
ALiBi adds ``-slope * distance`` to the attention scores, one slope per head (Press et al. 2022,
"Train Short, Test Long").

RoPE comes in two layouts. The paper and GPT-J rotate *adjacent* channels (0, 1), (2, 3), ...
(:func:`apply_rope_interleaved`); Hugging Face Llama rotates channel i with i + hs/2 ("rotate_half",
:func:`apply_rope`). They are the same function up to a fixed permutation of the head's channels, so a
checkpoint written for one layout runs in the other after permuting the rows of its q and k projection
weights (:func:`interleaved_to_half_permutation`; this is what HF's ``convert_llama_weights_to_hf.py``
``permute`` does).

References: HF ``transformers`` ``models/llama/modeling_llama.py`` (``rotate_half``,
``LlamaRotaryEmbedding``); the ALiBi reference implementation ``ofirpress/attention_with_linear_biases``
(``get_slopes``).
"""

import math

import torch
from torch import Tensor


def sinusoidal_table(T: int, C: int) -> Tensor:
    """(T, C) fixed position encodings: PE[p, 2i] = sin(p / 10000^(2i/C)), PE[p, 2i+1] = cos(same)."""
    assert C % 2 == 0, f"sinusoidal positions need an even width, got {C}"
    pos = torch.arange(T, dtype=torch.float32)[:, None]  # (T, 1)
    inv_freq = torch.exp(-math.log(10000.0) * torch.arange(0, C, 2, dtype=torch.float32) / C)  # (C/2,)
    table = torch.zeros(T, C)
    table[:, 0::2] = torch.sin(pos * inv_freq)
    table[:, 1::2] = torch.cos(pos * inv_freq)
    return table


def rope_inv_freq(head_dim: int, theta: float = 10000.0, device=None) -> Tensor:
    """(hs/2,) rotation speeds theta^(-2i/hs): channel pair i turns by position * inv_freq[i] radians."""
    assert head_dim % 2 == 0, f"RoPE needs an even head_dim, got {head_dim}"
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim))


def rope_cos_sin(
    positions: Tensor, head_dim: int, theta: float = 10000.0, dtype=None
) -> tuple[Tensor, Tensor]:
    """positions (B, T) -> cos, sin of shape (B, T, hs) in the rotate_half layout (angles repeated twice).

    Angles are computed in fp32 and only then cast, as HF does, so bf16 models match it.
    """
    inv_freq = rope_inv_freq(head_dim, theta, device=positions.device)  # (hs/2,)
    angles = positions.float()[..., None] * inv_freq  # (B, T, hs/2)
    emb = torch.cat([angles, angles], dim=-1)  # (B, T, hs)
    dtype = torch.float32 if dtype is None else dtype
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x: Tensor) -> Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last dimension."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate x (B, nh, T, hs) by the angles in cos/sin (B, T, hs), rotate_half layout (HF Llama)."""
    cos, sin = cos[:, None], sin[:, None]  # (B, 1, T, hs): same angles for every head
    return x * cos + rotate_half(x) * sin


def apply_rope_interleaved(x: Tensor, positions: Tensor, theta: float = 10000.0) -> Tensor:
    """The paper / GPT-J layout: channels (2i, 2i+1) form the pair rotated by position * inv_freq[i].

    x: (B, nh, T, hs), positions: (B, T).
    """
    hs = x.size(-1)
    angles = positions.float()[..., None] * rope_inv_freq(hs, theta, device=x.device)  # (B, T, hs/2)
    cos, sin = angles.cos()[:, None].to(x.dtype), angles.sin()[:, None].to(x.dtype)  # (B, 1, T, hs/2)
    x_even, x_odd = x[..., 0::2], x[..., 1::2]  # (B, nh, T, hs/2) each
    out_even = x_even * cos - x_odd * sin
    out_odd = x_even * sin + x_odd * cos
    return torch.stack([out_even, out_odd], dim=-1).flatten(-2)  # (B, nh, T, hs), pairs interleaved back


def interleaved_to_half_permutation(head_dim: int) -> Tensor:
    """Index ``perm`` with ``x_half = x_interleaved[..., perm]``: evens first, then odds.

    Channel pair (2i, 2i+1) of the interleaved layout becomes pair (i, i + hs/2) of the rotate_half
    layout. Permuting the output rows of W_q and W_k per head by ``perm`` converts a checkpoint, and
    ``apply_rope(x[..., perm]) == apply_rope_interleaved(x)[..., perm]``.
    """
    assert head_dim % 2 == 0, f"RoPE needs an even head_dim, got {head_dim}"
    return torch.cat([torch.arange(0, head_dim, 2), torch.arange(1, head_dim, 2)])


def alibi_slopes(n_head: int) -> Tensor:
    """(nh,) head slopes: the geometric sequence 2^(-8/n), 2^(-16/n), ... for n a power of two.

    For other head counts the paper takes the slopes of the nearest smaller power of two, then every
    other slope of the next power of two (Press et al. 2022, section 3; reference ``get_slopes``).
    """

    def power_of_2(n):
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    if math.log2(n_head).is_integer():
        slopes = power_of_2(n_head)
    else:
        closest = 2 ** math.floor(math.log2(n_head))
        slopes = power_of_2(closest) + power_of_2(2 * closest)[0::2][: n_head - closest]
    return torch.tensor(slopes, dtype=torch.float32)


def alibi_bias(slopes: Tensor, q_positions: Tensor, k_positions: Tensor) -> Tensor:
    """(B, nh, T, S) score bias ``-slope * (q_pos - k_pos)``: farther keys are penalised linearly.

    slopes (nh,), q_positions (B, T), k_positions (B, S). Future keys get a positive bias here; the
    causal mask removes them.
    """
    distance = (q_positions[:, :, None] - k_positions[:, None, :]).float()  # (B, T, S)
    return -slopes.to(distance.device)[None, :, None, None] * distance[:, None]  # (B, nh, T, S)
