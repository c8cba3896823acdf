"""The installed namespace and the layer rules of docs/architecture.md, checked on the source."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Folder (or module) → deepcrl subpackages it must never import. Layers only look down:
# envs → core (learner, buffer, collector, configs) → roles (*/process.py) → launch.
FORBIDDEN = {
    "envs": ("collector", "learner", "buffer", "launch", "configs", "rundir"),
    "rundir": ("envs", "collector", "learner", "buffer", "launch", "configs"),
    "learner": ("launch",),
    "collector": ("launch",),
    "buffer": ("launch", "learner.process", "collector.process"),
    "configs": ("launch", "learner.process", "collector.process"),
}
CORE_MODULES = ("learner/agent.py", "learner/networks.py", "learner/losses.py", "collector/rollout.py",
                "collector/coverage.py", "buffer/relabel.py", "buffer/trajectory_buffer.py")  # fmt: skip


def deepcrl_imports(path: Path) -> set[str]:
    """Every ``deepcrl.X`` module a file imports (at any depth, lazy imports included)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("deepcrl"):
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("deepcrl"))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            top = node.module.split(".")[0]
            if top in {"envs", "configs", "learner", "collector", "buffer", "launch", "rundir"}:
                out.add("bare:" + node.module)  # a pre-namespace import: always an error
    return out


def violations(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for mod in deepcrl_imports(path):
            if mod.startswith("bare:") or any(mod == f"deepcrl.{f}" or mod.startswith(f"deepcrl.{f}.")
                                              for f in forbidden):  # fmt: skip
                bad.append(f"{path.relative_to(ROOT)} imports {mod}")
    return bad


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_layers_only_look_down(folder):
    assert violations(folder, FORBIDDEN[folder]) == []


def test_core_modules_import_no_role_and_no_launcher():
    roles = (
        "launch", "learner.process", "collector.process", "buffer.reverb_replay", "buffer.reverb_writer",
        "buffer.reverb_sampler",
    )  # fmt: skip
    bad = [f"{m} imports {i}" for m in CORE_MODULES for i in deepcrl_imports(ROOT / m)
           if any(i == f"deepcrl.{r}" or i.startswith(f"deepcrl.{r}.") for r in roles)]  # fmt: skip
    assert bad == []


def test_the_checker_catches_a_role_importing_launch(tmp_path):
    """The rule above can fail: a file that imports the launcher is reported."""
    bad = tmp_path / "learner"
    bad.mkdir()
    (bad / "process.py").write_text("def f():\n    from deepcrl.launch.cli import UsageError\n")
    imports = deepcrl_imports(bad / "process.py")
    assert "deepcrl.launch.cli" in imports
    (bad / "old.py").write_text("from envs import make_env\n")
    assert "bare:envs" in deepcrl_imports(bad / "old.py")


def test_one_installed_namespace_from_outside_the_repo(tmp_path):
    code = (
        "import importlib, sys\n"
        "import deepcrl.learner.agent, deepcrl.envs, deepcrl.launch.cli\n"
        "assert deepcrl.learner.agent.make_agent\n"
        "for name in ('envs', 'configs', 'learner', 'collector', 'buffer', 'launch', 'rundir'):\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ModuleNotFoundError:\n"
        "        continue\n"
        "    sys.exit(f'top-level {name} is importable')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
