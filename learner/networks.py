"""Deep residual MLPs: the trunk shared by the actor, φ(s, a) and ψ(g).

Dense → LayerNorm → Swish, then ``depth / 4`` identical residual blocks of four
such layers with an identity skip, then an output layer. The blocks' weights
are stacked on a leading axis and applied with ``nn.scan`` so compile time does
not grow with depth; ``remat`` trades compute for memory at large depth.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

LAYERS_PER_BLOCK = 4
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {"swish": nn.swish, "relu": nn.relu}
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
kernel_init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")
# Under scan, saving every elementwise residual of a block costs more (stacked per iteration) than
# recomputing LayerNorm and swish from the saved matmul outputs (docs/benchmarks.md, issue 10).
SAVE_MATMULS = jax.checkpoint_policies.dots_with_no_batch_dims_saveable


@dataclasses.dataclass(frozen=True)
class TrunkConfig:
    """Shape and ablation switches of one residual trunk."""

    depth: int = 4
    width: int = 256
    residual: bool = True
    layer_norm: bool = True
    activation: str = "swish"
    scan: bool = True
    remat: bool = False
    scan_unroll: int = 1  # blocks per scan iteration (nn.scan ``unroll``); more fuses across blocks
    compute_dtype: str = "float32"  # matmul inputs; "bfloat16" keeps params and LayerNorm in float32

    @property
    def num_blocks(self) -> int:
        return self.depth // LAYERS_PER_BLOCK


def validate_trunk(cfg: TrunkConfig, role: str) -> None:
    """Raise ValueError with a one-line reason if the trunk cannot be built."""
    if cfg.depth <= 0 or cfg.depth % LAYERS_PER_BLOCK:
        raise ValueError(
            f"{role} depth must be a positive multiple of {LAYERS_PER_BLOCK} (4, 8, ..., 1024), got {cfg.depth}"
        )
    if cfg.width <= 0:
        raise ValueError(f"{role} width must be positive, got {cfg.width}")
    if cfg.activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {cfg.activation!r}; valid: {', '.join(ACTIVATIONS)}")
    if cfg.compute_dtype not in COMPUTE_DTYPES:
        raise ValueError(f"unknown compute_dtype {cfg.compute_dtype!r}; valid: {', '.join(COMPUTE_DTYPES)}")
    if cfg.scan_unroll < 1:
        raise ValueError(f"{role} scan_unroll must be >= 1, got {cfg.scan_unroll}")


def _dense(features: int, compute_dtype: str, name: str | None = None) -> nn.Dense:
    """Dense with float32 parameters; inputs and kernel cast to ``compute_dtype`` for the matmul."""
    return nn.Dense(features, kernel_init=kernel_init, bias_init=nn.initializers.zeros,
                    dtype=COMPUTE_DTYPES[compute_dtype], param_dtype=jnp.float32, name=name)  # fmt: skip


class _Layer(nn.Module):
    width: int
    layer_norm: bool
    activation: str
    compute_dtype: str = "float32"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = _dense(self.width, self.compute_dtype, name="Dense_0")(x)
        if self.layer_norm:
            x = nn.LayerNorm(dtype=jnp.float32)(x)  # statistics and residual stream in float32
        else:
            x = x.astype(jnp.float32)
        return ACTIVATIONS[self.activation](x)


class ResidualBlock(nn.Module):
    """Four layers with an identity skip around them (the unit that is scanned)."""

    cfg: TrunkConfig

    @nn.compact
    def __call__(self, x: jax.Array, _=None):
        h = x
        for _i in range(LAYERS_PER_BLOCK):
            h = _Layer(self.cfg.width, self.cfg.layer_norm, self.cfg.activation, self.cfg.compute_dtype)(h)
        if self.cfg.residual:
            h = h + x
        return h, None


class Trunk(nn.Module):
    cfg: TrunkConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.cfg
        x = _Layer(cfg.width, cfg.layer_norm, cfg.activation, cfg.compute_dtype, name="input")(x)
        if cfg.remat:  # keep only each block's input; recompute the block in the backward pass
            block = nn.remat(ResidualBlock, prevent_cse=not cfg.scan)
        elif cfg.scan:  # keep the matmul outputs, recompute LayerNorm and swish: ~1.3x faster on CPU
            block = nn.remat(ResidualBlock, prevent_cse=False, policy=SAVE_MATMULS)
        else:
            block = ResidualBlock
        if cfg.scan:
            blocks = nn.scan(
                block,
                variable_axes={"params": 0},
                split_rngs={"params": True},
                length=cfg.num_blocks,
                unroll=min(cfg.scan_unroll, cfg.num_blocks),
            )(cfg, name="blocks")
            x, _ = blocks(x, None)
        else:
            for i in range(cfg.num_blocks):
                x, _ = block(cfg, name=f"block_{i}")(x, None)
        return x


class Encoder(nn.Module):
    """Trunk followed by a linear map to the representation (φ or ψ)."""

    cfg: TrunkConfig
    out_dim: int = 64

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = Trunk(self.cfg)(x)
        return _dense(self.out_dim, self.cfg.compute_dtype, name="Dense_0")(h).astype(jnp.float32)


LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


class Actor(nn.Module):
    """Gaussian policy head before the tanh squash: returns (mean, log_std)."""

    cfg: TrunkConfig
    action_size: int

    @nn.compact
    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = Trunk(self.cfg)(obs)
        mean = _dense(self.action_size, self.cfg.compute_dtype, name="Dense_0")(h).astype(jnp.float32)
        raw = _dense(self.action_size, self.cfg.compute_dtype, name="Dense_1")(h).astype(jnp.float32)
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (jnp.tanh(raw) + 1.0)
        return mean, log_std


def count_dense_layers(params) -> int:
    """Number of Dense kernels in a parameter tree (stacked kernels count per slice)."""
    total = 0
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        if getattr(path[-1], "key", None) == "kernel":
            total += leaf.shape[0] if leaf.ndim == 3 else 1
    return total


def count_params(params) -> int:
    return sum(int(x.size) for x in jax.tree_util.tree_leaves(params))
