"""The installed namespace and the layer rules of docs/architecture.md, checked on the source: who
imports whom, that no import circle exists, who imports Reverb and Ray, and the roles' one contract."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from deepcrl.roles import contract
from deepcrl.roles.collector import Collector
from deepcrl.roles.learner import Learner
from deepcrl.roles.replay import ReplayService

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("envs", "configs", "learner", "collector", "buffer", "roles", "launch", "rundir")  # = deepcrl.*

# Folder (or module) → deepcrl subpackages it must never import. Layers only look down:
# envs → core (learner, buffer, collector), configs → roles → launch; rundir beside them all.
FORBIDDEN = {
    "envs": ("collector", "learner", "buffer", "launch", "configs", "rundir", "roles"),
    "rundir": ("envs", "collector", "learner", "buffer", "launch", "configs", "roles"),
    "learner": ("launch", "roles"),
    "collector": ("launch", "roles"),
    "buffer": ("launch", "roles"),
    "configs": ("launch", "roles"),
    "roles": ("launch",),
}
CORE_MODULES = ("learner/agent.py", "learner/networks.py", "learner/losses.py", "collector/rollout.py",
                "collector/coverage.py", "collector/segments.py", "buffer/relabel.py",
                "buffer/trajectory_buffer.py")  # fmt: skip


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
            if top in PACKAGES:
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
    roles = ("launch", "roles", "buffer.reverb_replay", "buffer.reverb_writer", "buffer.reverb_sampler")
    bad = [f"{m} imports {i}" for m in CORE_MODULES for i in deepcrl_imports(ROOT / m)
           if any(i == f"deepcrl.{r}" or i.startswith(f"deepcrl.{r}.") for r in roles)]  # fmt: skip
    assert bad == []


def test_the_checker_catches_a_role_importing_launch(tmp_path):
    """The rule above can fail: a file that imports the launcher is reported."""
    bad = tmp_path / "roles"
    bad.mkdir()
    (bad / "learner.py").write_text("def f():\n    from deepcrl.launch.cli import UsageError\n")
    imports = deepcrl_imports(bad / "learner.py")
    assert "deepcrl.launch.cli" in imports
    (bad / "old.py").write_text("from envs import make_env\n")
    assert "bare:envs" in deepcrl_imports(bad / "old.py")


def test_one_installed_namespace_from_outside_the_repo(tmp_path):
    code = (
        "import importlib, sys\n"
        "import deepcrl.learner.agent, deepcrl.envs, deepcrl.launch.cli, deepcrl.roles.contract\n"
        "assert deepcrl.learner.agent.make_agent\n"
        f"for name in {PACKAGES!r}:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ModuleNotFoundError:\n"
        "        continue\n"
        "    sys.exit(f'top-level {name} is importable')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_every_folder_is_a_packaged_subpackage():
    """A top-level folder of the project is installed as ``deepcrl.<folder>`` (pyproject.toml)."""
    import tomllib

    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert folders == {*PACKAGES, "api"}  # api/ is deepcrl itself: the Python API (docs/api.md)
    assert setup["package-dir"]["deepcrl"] == "api" and "deepcrl" in setup["packages"]
    assert {f"deepcrl.{f}" for f in PACKAGES} <= set(setup["packages"])
    assert all(setup["package-dir"][f"deepcrl.{f}"] == f for f in PACKAGES)


# ------------------------------------------------------------------------------------ imports
def project_files() -> list[Path]:
    return sorted(p for f in PACKAGES for p in (ROOT / f).rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(("deepcrl", *(parts[:-1] if parts[-1] == "__init__" else parts)))


def imported_tops(path: Path) -> set[str]:
    """The top-level name of every module a file imports (at any depth, lazy imports included)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


RAY_BUFFER_MODULES = ("buffer/ray_replay.py", "buffer/ray_client.py")  # the replay backend on Ray


def test_only_the_reverb_modules_import_reverb_and_only_launch_imports_ray():
    bad = []
    for path in project_files():
        rel, tops = path.relative_to(ROOT), imported_tops(path)
        reverb_module = rel.parent.name == "buffer" and rel.name.startswith("reverb_")
        bad += [f"{rel} imports {t}" for t in sorted(tops & {"reverb", "tensorflow"}) if not reverb_module]
        if "ray" in tops and rel.parts[0] != "launch" and rel.as_posix() not in RAY_BUFFER_MODULES:
            bad.append(f"{rel} imports ray")
    assert bad == []


def import_graph(files: list[Path]) -> dict[str, set[str]]:
    """Module → the project's modules it imports (function-local imports included). ``from a import
    b`` points to ``a.b`` where that is a module, else to ``a``."""
    modules = {module_name(p): p for p in files}
    graph = {}
    for name, path in modules.items():
        out = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                out.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                out.update(f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                           for a in node.names)  # fmt: skip
        graph[name] = (out & set(modules)) - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import circle of ``graph`` as [a, b, ..., a], or [] when it has none (depth-first search)."""
    state: dict[str, str] = {}  # "open" while on the current path, then "done"
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        path.pop()
        return []

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return []


def test_no_import_circle_among_the_project_modules():
    graph = import_graph(project_files())
    assert graph["deepcrl.launch.supervise"] >= {"deepcrl.launch.ray_roles", "deepcrl.roles.learner"}
    assert find_cycle(graph) == []


def test_the_circle_finder_finds_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"b"}}) == ["b", "c", "b"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


# ------------------------------------------------------------------------------------ the role contract
def declared(*protocols: type) -> dict[str, inspect.Signature]:
    """The methods the contract's protocols declare (their own and inherited), by name."""
    out = {}
    for proto in protocols:
        for cls in reversed(proto.__mro__):
            if typing.Protocol in cls.__mro__ and cls is not typing.Protocol:
                out.update({n: inspect.signature(f) for n, f in vars(cls).items()
                            if inspect.isfunction(f) and not n.startswith("_")})  # fmt: skip
    return out


def test_every_role_implements_the_contract():
    from deepcrl.launch.ray_roles import named_role

    pairs = [(Learner, contract.LearnerRole), (Collector, contract.CollectorRole),
             (ReplayService, contract.ReplayRole)]  # fmt: skip
    assert set(declared(contract.Role)) >= {"ready", "run", "stop", "progress", "checkpoint", "reconnect"}
    missing = []
    for cls, proto in pairs:
        hosted = named_role(cls, "role_0")  # the class its Ray actor is made of
        for name, want in declared(proto, contract.Hosted).items():
            method = getattr(hosted, name, None)
            if not callable(method):
                missing.append(f"{cls.__name__}.{name}")
            elif not set(want.parameters) <= set(inspect.signature(method).parameters):
                missing.append(f"{cls.__name__}.{name}{inspect.signature(method)} (contract: {name}{want})")
    assert missing == []


def remote_methods(path: Path) -> list[str]:
    """The method of every ``handle.method.remote(...)`` call in a file (any other ``.remote(`` call
    is reported as its whole callee, which no contract declares)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "remote":
            target = node.func.value
            out.append(target.attr if isinstance(target, ast.Attribute) else ast.unparse(target))
    return out


def test_every_remote_call_of_the_supervisor_is_in_the_contract():
    protocols = [c for c in vars(contract).values() if isinstance(c, type) and typing.Protocol in c.__mro__]
    names = set(declared(*protocols))
    calls = [m for f in ("supervise", "watchdog", "distributed", "elastic") for m in remote_methods(ROOT / f"launch/{f}.py")]
    assert {"start", "whoami", "run", "progress", "drain", "get_actor_params", "set_tables", "reset"} <= set(calls)
    assert sorted(set(calls) - names) == []


# ------------------------------------------------------------------------------------ one reading
# Every Python file of the repository: the package, its tests and its benchmarks.
ALL_FILES = sorted(
    p for p in ROOT.rglob("*.py") if not any(part.startswith(".") or part.endswith(".egg-info")
                                             for part in p.relative_to(ROOT).parts)
)  # fmt: skip
# Third-party modules a run may lack or that cost much to import: imported where they are used.
OPTIONAL = {"reverb", "tensorflow", "ray", "wandb"}


def top_level_imports(path: Path) -> set[str]:
    """Modules a file imports when it is imported (its module-level statements, not its functions)."""
    out = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.update({node.module, *(f"{node.module}.{a.name}" for a in node.names)})
    return out


def heavy_modules() -> dict[str, str]:
    """Project module → why it is imported where used: it brings an optional dependency with it (at
    any depth), or it defines command-line flags (absl allows each flag name once per process)."""
    modules = {module_name(p): p for p in project_files()}
    why = {m: "defines command-line flags" for m, p in modules.items() if "flags.DEFINE_" in p.read_text()}
    why["deepcrl.envs.rendering"] = "renders with OpenGL: MUJOCO_GL must be set before its first import"
    changed = True
    while changed:
        changed = False
        for m, p in modules.items():
            imports = top_level_imports(p)
            hit = {i.split(".")[0] for i in imports} & OPTIONAL or {i for i in imports if i in why and i != m}
            if m not in why and hit:
                why[m], changed = f"imports {sorted(hit)[0]}", True
    return why


def local_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import of the project's modules inside a function of ``path``."""
    out = []
    for fn in ast.walk(ast.parse(path.read_text())):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("deepcrl"):
                    out += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
                elif isinstance(node, ast.Import):
                    out += [(node.lineno, a.name) for a in node.names if a.name.startswith("deepcrl")]
    return sorted(set(out))


def test_the_project_is_imported_at_the_top_except_optional_dependencies():
    """A function-local import of one of our modules hides the import graph; it is allowed only for a
    module that brings Reverb, TensorFlow, Ray or wandb with it, or that defines flags."""
    heavy = heavy_modules()
    assert {"deepcrl.buffer.reverb_replay", "deepcrl.launch.distributed", "deepcrl.launch.run"} <= set(heavy)
    bad = []
    for path in ALL_FILES:
        for line, target in local_imports(path):
            module = next((m for m in (target, target.rsplit(".", 1)[0]) if m in heavy), None)
            if module is None:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {target} inside a function")
    assert bad == []


def test_every_file_and_function_fits_one_reading():
    """Files of at most 500 lines, functions of at most 80 (tests and benchmarks included)."""
    bad = []
    for path in ALL_FILES:
        text = path.read_text()
        if len(text.splitlines()) > 500:
            bad.append(f"{path.relative_to(ROOT)}: {len(text.splitlines())} lines")
        for fn in ast.walk(ast.parse(text)):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and fn.end_lineno - fn.lineno >= 80:
                bad.append(f"{path.relative_to(ROOT)}:{fn.lineno} {fn.name}: {fn.end_lineno - fn.lineno + 1} lines")
    assert bad == []


def test_readme_first_screen_and_no_path_outside_the_repository():
    """Issue 27: what the project is, the two commands (set-up and run; set-up and test), where results
    land, in the first lines; no path a reader of the repository alone cannot follow."""
    text = (ROOT / "README.md").read_text()
    head = text.split("\n## ", 1)[0]
    commands = head.split("```bash\n", 1)[1].split("```", 1)[0].strip().splitlines()
    assert commands == [
        "./setup.sh && .venv/bin/python launch/run.py --topology collector_deep_learner_shallow --env point_mass_walls",
        "./setup.sh && ./test.sh",
    ]
    prose = [line for line in head.splitlines() if line and not line.startswith(("#", "```", "./"))]
    assert len(prose) == 2 and "runs/" in prose[1], prose
    assert "../" not in text
