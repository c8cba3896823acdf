"""A value damaged in a way Orbax itself cannot see is caught by the checkpoint's manifest (CRC32s).

Orbax guards its own B-tree nodes with CRC-32C, so bytes flipped in its metadata, or in a small
array it stores inline, make Orbax fail on its own (tests/test_rundir_mistakes.py damages those).
A larger array's chunk is an indirect value: a zstd frame without a checksum, and bytes zstd
cannot compress are stored verbatim. One bit flipped there changes one number and Orbax restores it
without a word: only ``rundir/checkpoints.py``'s manifest tells. Each test first shows that Orbax
alone accepts the damage.

Not core: where Orbax puts an array's bytes differs across Orbax versions (this is the pinned one).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp
import pytest

from deepcrl.rundir.checkpoints import CheckpointError, previous, restore_train_state, save_train_state

SIZE = 1024  # float32: 4 KiB, above Orbax's inline limit (64 floats are inlined and CRC-32C checked)
FLIPPED = 5  # the element damaged


def incompressible(seed: int) -> np.ndarray:
    """Finite float32 values of uniformly random bytes (exponent 255, inf/nan, avoided): zstd stores
    them raw, so they can be found in the checkpoint's files."""
    bits = np.random.default_rng(seed).integers(0, 2**32, SIZE, dtype=np.uint32)
    bits = np.where((bits >> 23) & 0xFF == 0xFF, bits ^ (1 << 30), bits).astype(np.uint32)
    return bits.view(np.float32)


def train_state(seed: int) -> dict:
    return {"w": incompressible(seed), "b": np.full(3, float(seed), np.float32), "step": np.int32(seed)}


def zeros_like(tree: dict) -> dict:
    return {k: np.zeros_like(v) for k, v in tree.items()}


def flip_a_bit_of(ckpt: Path, w: np.ndarray) -> list[Path]:
    """Flip the lowest bit of element ``FLIPPED``'s second byte (mantissa) wherever ``w`` is stored."""
    raw = w.tobytes()
    hits = [f for f in sorted(ckpt.rglob("*")) if f.is_file() and raw in f.read_bytes()]
    assert hits, f"the array's bytes are not stored verbatim in {ckpt}"
    for f in hits:
        data = bytearray(f.read_bytes())
        data[data.index(raw) + 4 * FLIPPED + 1] ^= 0x01
        f.write_bytes(bytes(data))
    return hits


def assert_orbax_alone_restores_it_damaged(ckpt: Path, saved: dict) -> None:
    """The damage is one Orbax accepts: it restores, and exactly the flipped number differs."""
    alone = ocp.StandardCheckpointer().restore(ckpt, target=zeros_like(saved))
    assert np.flatnonzero(alone["w"] != saved["w"]).tolist() == [FLIPPED]
    np.testing.assert_array_equal(alone["b"], saved["b"])
    assert int(alone["step"]) == int(saved["step"])


def test_a_flipped_value_falls_back_to_the_previous_checkpoint(tmp_path, capfd):
    """The latest checkpoint, damaged where Orbax cannot tell, is refused by its CRC32 and the previous
    one restored with one warning naming the file; the next save then keeps the restored one."""
    path = tmp_path / "latest"
    old, new = train_state(1), train_state(2)
    save_train_state(path, old)
    save_train_state(path, new)
    hits = flip_a_bit_of(path, new["w"])
    assert_orbax_alone_restores_it_damaged(path, new)
    capfd.readouterr()
    restored = restore_train_state(path, zeros_like(new))
    np.testing.assert_array_equal(restored["w"], old["w"])
    assert int(restored["step"]) == 1
    warnings = [line for line in capfd.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, warnings
    assert f"{path} is damaged (" in warnings[0] and "CRC32 differs" in warnings[0], warnings
    assert any(str(f.relative_to(path)) in warnings[0] for f in hits), (warnings, hits)
    assert f"restored the previous one {previous(path)}" in warnings[0], warnings
    # The next save drops the damaged one and keeps the one restored as the previous.
    save_train_state(path, train_state(3))
    kept = restore_train_state(previous(path), zeros_like(new))
    np.testing.assert_array_equal(kept["w"], old["w"])


def test_a_flipped_value_without_a_previous_checkpoint_raises(tmp_path):
    """No previous checkpoint: the damaged one is not restored, ``CheckpointError`` says why, on one line."""
    path = tmp_path / "latest"
    saved = train_state(7)
    save_train_state(path, saved)
    flip_a_bit_of(path, saved["w"])
    assert_orbax_alone_restores_it_damaged(path, saved)
    with pytest.raises(CheckpointError) as e:
        restore_train_state(path, zeros_like(saved))
    message = str(e.value)
    assert "\n" not in message and f"{path} is damaged (" in message and "CRC32 differs" in message, message
    assert f"{previous(path)} is missing" in message, message
