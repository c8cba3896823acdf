"""Test helper: what a traced program really contains (remat checkpoints, bfloat16 matmuls).

A flag that is silently ignored still gives the right numbers; the program it traces to does not.
These walk a jaxpr and every sub-jaxpr (scan, jit, cond, custom derivatives, checkpoint bodies).
"""

from __future__ import annotations

from collections.abc import Iterator

import jax
import jax.numpy as jnp


def equations(fn, *args) -> Iterator:
    """Every equation of ``fn``'s jaxpr traced at ``args`` (arrays or ShapeDtypeStructs), nested ones too."""

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            yield eqn
            for value in eqn.params.values():
                for sub in value if isinstance(value, (list, tuple)) else [value]:
                    inner = getattr(sub, "jaxpr", sub)  # ClosedJaxpr -> Jaxpr
                    if hasattr(inner, "eqns"):
                        yield from walk(inner)

    yield from walk(jax.make_jaxpr(fn)(*args).jaxpr)


def checkpoint_policies(fn, *args) -> list:
    """The ``policy`` of every checkpoint (remat) equation; ``None``: the whole body is recomputed.

    The primitive is ``remat2`` on JAX 0.4 and ``checkpoint`` later; both carry ``policy`` and
    ``prevent_cse``, which is what is matched here.
    """
    return [e.params["policy"] for e in equations(fn, *args) if {"policy", "prevent_cse"} <= e.params.keys()]


def bf16_dot_generals(fn, *args) -> tuple[int, int]:
    """(dot_generals whose operands are all bfloat16, all dot_generals)."""
    dots = [e for e in equations(fn, *args) if e.primitive.name == "dot_general"]
    return sum(all(v.aval.dtype == jnp.bfloat16 for v in e.invars) for e in dots), len(dots)
