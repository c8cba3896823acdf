"""One dispatch from a resolved experiment to its topology's runtime, for every launcher
(``launch/run.py``, the study runner)."""

from __future__ import annotations

from pathlib import Path

from deepcrl.configs.experiment import Experiment
from deepcrl.launch.single import run_single
from deepcrl.rundir.lock import DriverLock


def run_experiment(
    experiment: Experiment,
    run_dir: Path,
    *,
    resume: bool = False,
    progress: bool = True,
    seed_dirs: list[Path] | None = None,
) -> dict:
    """Run ``experiment`` to the end in ``run_dir``; its final evaluation row (a distributed run:
    the driving learner's, named in the row's ``learner`` field).

    ``seed_dirs`` (``single`` with K seeds): where each seed's own run directory goes.
    The driver holds ``run_dir`` for its whole life (``rundir/lock.py``); ``RunDirBusy`` when another does.
    """
    with DriverLock(run_dir):  # one driver per run directory (RunDirBusy names the live one)
        if not experiment.distributed:
            return run_single(experiment, run_dir, progress=progress, resume=resume, seed_dirs=seed_dirs)
        # Ray and Reverb come with the `distributed` extra; the core install runs `single` without them.
        from deepcrl.launch.distributed import run_distributed

        return run_distributed(experiment, run_dir, resume=resume, progress=progress)
