"""The replay's checkpoints fall back as the roles' do (issue 24, item 11), and keep its drain counts.

A real ``ReplayService`` (no Ray) on a real Reverb server, restarted on its folder the way the driver
restarts it after a death and on ``--resume``. Reverb keeps one checkpoint only; the service keeps the
previous one beside it (``RUN/replay.previous/``) and moves a damaged one to ``RUN/replay.damaged/``.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
from test_reverb_replay import LONG, make_batch, spec_for

from deepcrl.buffer import reverb_replay as rr
from deepcrl.buffer import reverb_sampler as rs
from deepcrl.buffer import reverb_writer as rw
from deepcrl.roles.replay import ReplayService
from deepcrl.rundir.checkpoints import MANIFEST


def _write(service: ReplayService, rng: np.random.Generator, n: int) -> None:
    with rw.SegmentWriter(service._local_address, service.spec) as writer:
        writer.write(make_batch(rng, n))


def _drain_a_while(service: ReplayService, table: str) -> dict[str, int]:
    """Drain ``table`` until it has discarded some samples, stop, and return the counts once still."""
    service.drain(table)
    while service.drained_counts().get(table, 0) < 5:
        threading.Event().wait(0.01)
    service.stop_drain(table)
    for t in threading.enumerate():
        if t.name == f"drain-{table}":
            t.join(timeout=LONG)
    return service.drained_counts()


def _size(service: ReplayService) -> int:
    return service.info()["deep"]["size"]


def _warnings(capfd) -> list[str]:
    err = capfd.readouterr().err
    assert "Traceback" not in err, err[-3000:]
    return [line for line in err.splitlines() if line.startswith("warning:")]


def test_a_damaged_replay_checkpoint_falls_back_to_the_previous_one(tmp_path, capfd):
    spec, folder, rng = spec_for(), tmp_path / "replay", np.random.default_rng(0)
    first = ReplayService(spec, str(folder))
    _write(first, rng, 4)
    drained_1 = _drain_a_while(first, "shallow")
    previous = Path(first.checkpoint())
    _write(first, rng, 2)
    drained_2 = _drain_a_while(first, "shallow")
    latest = Path(first.checkpoint())
    first.stop()
    assert drained_2["shallow"] > drained_1["shallow"] > 0
    # Reverb kept the latest only; the previous one is kept beside the folder (the same files, linked).
    assert [p.name for p in folder.iterdir()] == [latest.name]
    kept = rr.previous_dir(folder) / previous.name
    assert sorted(p.name for p in kept.parent.iterdir()) == [previous.name]
    assert (kept / MANIFEST).is_file() and (latest / MANIFEST).is_file()

    again = ReplayService(spec, str(folder))  # a restart: the latest, with its drain counts
    assert (_size(again), again.drained_counts()) == (6, drained_2)
    again.stop()
    assert _warnings(capfd) == []

    chunks = latest / "chunks.tfrecord"
    damage = os.urandom(chunks.stat().st_size)
    chunks.write_bytes(damage)  # random bytes over the latest's data
    back = ReplayService(spec, str(folder))
    warnings = _warnings(capfd)
    assert len(warnings) == 1, warnings
    moved = rr.damaged_dir(folder) / latest.name
    assert f"replay checkpoint {latest} is damaged (chunks.tfrecord has corrupted bytes" in warnings[0]
    assert f"moved to {moved}; restored the previous one {kept}" in warnings[0]
    assert (moved / "chunks.tfrecord").read_bytes() == damage  # set aside as it was, not deleted
    assert (_size(back), back.drained_counts()) == (4, drained_1)
    # The run goes on: it serves samples, takes inserts, and its next checkpoints keep a previous one.
    with rs.SegmentSampler(back._local_address, "deep", 2, spec) as sampler:
        assert sampler.sample(timeout_s=LONG).data["state"].shape[0] == 2
    _write(back, rng, 1)
    newer = Path(back.checkpoint())
    assert [p.name for p in rr.previous_dir(folder).iterdir()] == [previous.name]  # nothing newer to keep
    newest = Path(back.checkpoint())
    assert [p.name for p in rr.previous_dir(folder).iterdir()] == [newer.name]
    back.stop()
    assert _warnings(capfd) == []

    # Both damaged, one found by its manifest, one by Reverb itself (no manifest): empty tables.
    (newest / MANIFEST).unlink()
    (newest / "chunks.tfrecord").write_bytes(os.urandom((newest / "chunks.tfrecord").stat().st_size))
    kept = rr.previous_dir(folder) / newer.name
    os.truncate(kept / "chunks.tfrecord", (kept / "chunks.tfrecord").stat().st_size // 2)
    empty = ReplayService(spec, str(folder))
    warnings = _warnings(capfd)
    assert len(warnings) == 1 and f"replay checkpoint {newest} is damaged (" in warnings[0], warnings
    assert f"replay checkpoint {kept} is damaged (chunks.tfrecord has " in warnings[0]
    assert "the replay starts with empty tables, which the collector refills" in warnings[0]
    assert (_size(empty), empty.drained_counts()) == (0, {})
    _write(empty, rng, 3)  # and refills
    assert _size(empty) == 3
    empty.stop()
    assert sorted(p.name for p in rr.damaged_dir(folder).iterdir()) == sorted([latest.name, newer.name, newest.name])


def test_a_taken_port_is_not_taken_for_a_damaged_checkpoint(tmp_path):
    """A server that fails to start for another reason raises, and its checkpoint stays where it was."""
    spec, folder = spec_for(), tmp_path / "replay"
    service = ReplayService(spec, str(folder))
    _write(service, np.random.default_rng(0), 2)
    latest = Path(service.checkpoint())
    service.stop()
    with socket.socket() as taken:
        taken.bind(("", 0))
        taken.listen()
        with pytest.raises(ValueError, match="BuildAndStart"):
            ReplayService(spec, str(folder), port=taken.getsockname()[1])
    assert rr.restorable(folder) == [latest] and not rr.damaged_dir(folder).exists()
