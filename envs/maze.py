"""Maze layouts as data: grids, wall boxes, start and goal cells, and their MJCF.

One grid (``1`` wall, ``0`` free, ``R`` start, ``G`` possible goal) plus a cell
size fully defines a maze. Ant and humanoid mazes share this module (and a
pure-JAX point-mass maze can too: ``maze_grid`` and ``wall_boxes`` need no
physics engine), so geometry, start and goal distribution cannot drift apart.

Frame, as in the paper's code: grid row ``i`` lies at x = cell·i and column
``j`` at y = cell·j, so cell (0, 0) is centred on the world origin and the
robot starts at the centre of the ``R`` cell (the env adds its own reset
noise). A top-down plot with +x right therefore shows the grid transposed.
"""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "EVAL_MAZES",
    "GRIDS",
    "Maze",
    "MazeTask",
    "insert_walls",
    "maze_grid",
    "parse_grid",
    "set_geom_collision",
    "wall_boxes",
]

# The reference's grids (scaling-crl envs/ant_maze.py, envs/humanoid_maze.py), row by row.
# ``*_eval`` layouts keep the training walls and start but only the far goal cells:
# the paper trained on the full layout and evaluated on these.
GRIDS: dict[str, tuple[str, ...]] = {
    "u4": (
        "1 1 1 1 1",
        "1 G G G 1",
        "1 R 1 G 1",
        "1 1 1 G 1",
        "1 G 1 G 1",
        "1 G G G 1",
        "1 1 1 1 1",
    ),
    "u4_eval": (
        "1 1 1 1 1",
        "1 0 0 0 1",
        "1 R 1 0 1",
        "1 1 1 0 1",
        "1 G 1 0 1",
        "1 G G G 1",
        "1 1 1 1 1",
    ),
    "u5": (
        "1 1 1 1 1 1 1 1",
        "1 G G G G G G 1",
        "1 R 1 1 1 1 G 1",
        "1 1 1 1 1 1 G 1",
        "1 G 1 1 1 1 G 1",
        "1 G G G G G G 1",
        "1 1 1 1 1 1 1 1",
    ),
    "u5_eval": (
        "1 1 1 1 1 1 1 1",
        "1 0 0 0 0 0 0 1",
        "1 R 1 1 1 1 0 1",
        "1 1 1 1 1 1 0 1",
        "1 G 1 1 1 1 G 1",
        "1 G G G G G G 1",
        "1 1 1 1 1 1 1 1",
    ),
    "big": (
        "1 1 1 1 1 1 1 1",
        "1 R G 1 1 G G 1",
        "1 G G 1 G G G 1",
        "1 1 G G G 1 1 1",
        "1 G G 1 G G G 1",
        "1 G 1 G G 1 G 1",
        "1 G G G 1 G G 1",
        "1 1 1 1 1 1 1 1",
    ),
    "big_eval": (
        "1 1 1 1 1 1 1 1",
        "1 R 0 1 1 G G 1",
        "1 0 0 1 0 0 G 1",
        "1 1 0 0 0 1 1 1",
        "1 0 0 1 0 0 0 1",
        "1 0 1 G 0 1 G 1",
        "1 0 G G 1 G G 1",
        "1 1 1 1 1 1 1 1",
    ),
    "hardest": (
        "1 1 1 1 1 1 1 1 1 1 1 1",
        "1 R G G G 1 G G G G G 1",
        "1 G 1 1 G 1 G 1 G 1 G 1",
        "1 G G G G G G 1 G G G 1",
        "1 G 1 1 1 1 G 1 1 1 G 1",
        "1 G G 1 G 1 G G G G G 1",
        "1 1 G 1 G 1 G 1 G 1 1 1",
        "1 G G 1 G G G 1 G G G 1",
        "1 1 1 1 1 1 1 1 1 1 1 1",
    ),
    "humanoid_u": (
        "1 1 1 1 1",
        "1 R G G 1",
        "1 1 1 G 1",
        "1 G G G 1",
        "1 1 1 1 1",
    ),
    "humanoid_u_eval": (
        "1 1 1 1 1",
        "1 R 0 0 1",
        "1 1 1 0 1",
        "1 G G G 1",
        "1 1 1 1 1",
    ),
    # The humanoid's big eval grid has one more goal cell than the ant's (row 2, column 5).
    "humanoid_big_eval": (
        "1 1 1 1 1 1 1 1",
        "1 R 0 1 1 G G 1",
        "1 0 0 1 0 G G 1",
        "1 1 0 0 0 1 1 1",
        "1 0 0 1 0 0 0 1",
        "1 0 1 G 0 1 G 1",
        "1 0 G G 1 G G 1",
        "1 1 1 1 1 1 1 1",
    ),
}

# Training layout → its evaluation layout (far goals only); mazes without one evaluate on themselves.
EVAL_MAZES: dict[str, str] = {
    "u4": "u4_eval",
    "u5": "u5_eval",
    "big": "big_eval",
    "humanoid_u": "humanoid_u_eval",
}


def parse_grid(rows: tuple[str, ...] | list[str]) -> np.ndarray:
    """Grid rows (space-separated tokens) → 2-D array of single characters."""
    cells = [row.split() for row in rows]
    if len({len(r) for r in cells}) != 1:
        raise ValueError("maze rows must all have the same length")
    grid = np.array(cells, dtype="<U1")
    bad = set(np.unique(grid)) - {"0", "1", "R", "G"}
    if bad:
        raise ValueError(f"unknown maze symbols {sorted(bad)}; use 0, 1, R, G")
    if (grid == "R").sum() != 1:
        raise ValueError("a maze needs exactly one R (start) cell")
    if (grid == "G").sum() == 0:
        raise ValueError("a maze needs at least one G (goal) cell")
    return grid


def maze_grid(name: str) -> np.ndarray:
    """The parsed grid of a named layout; an unknown name raises a ValueError listing the valid ones."""
    if name not in GRIDS:
        raise ValueError(f"unknown maze {name!r}; valid: {', '.join(sorted(GRIDS))}")
    return parse_grid(GRIDS[name])


def cell_center(i, j, cell_size: float) -> np.ndarray:
    """World (x, y) of the centre of cell (row i, column j): (cell·i, cell·j); arrays allowed."""
    return np.stack([np.asarray(i, np.float64) * cell_size, np.asarray(j, np.float64) * cell_size], -1)


def wall_rectangles(grid: np.ndarray, merge: bool = True) -> list[tuple[int, int, int, int]]:
    """Wall cells as (row, col, n_rows, n_cols) blocks.

    With ``merge`` adjacent wall cells are greedily merged into rectangles
    covering exactly the same region: Brax/MJX test every robot-geom ×
    wall-geom pair on every substep (there is no broadphase), so fewer boxes
    make maze physics several times faster. Without it every wall cell is its
    own box, as in the paper's code.
    """
    walls = grid == "1"
    if not merge:
        return [(int(i), int(j), 1, 1) for i, j in np.argwhere(walls)]
    used = np.zeros_like(walls)
    rects = []
    rows, cols = walls.shape
    for i in range(rows):
        for j in range(cols):
            if not walls[i, j] or used[i, j]:
                continue
            w = 1
            while j + w < cols and walls[i, j + w] and not used[i, j + w]:
                w += 1
            h = 1
            while i + h < rows and (walls[i + h, j : j + w] & ~used[i + h, j : j + w]).all():
                h += 1
            used[i : i + h, j : j + w] = True
            rects.append((i, j, h, w))
    return rects


def wall_boxes(grid: np.ndarray, cell_size: float, merge: bool = True) -> np.ndarray:
    """Walls as an ``[n, 4]`` float32 array of (centre x, centre y, half-size x, half-size y).

    Plain data in the maze frame, usable by MJCF builders and pure-JAX envs alike.
    """
    boxes = []
    for i, j, h, w in wall_rectangles(grid, merge):
        x, y = 0.5 * (cell_center(i, j, cell_size) + cell_center(i + h - 1, j + w - 1, cell_size))
        boxes.append((x, y, 0.5 * h * cell_size, 0.5 * w * cell_size))
    return np.asarray(boxes, np.float32).reshape(-1, 4)


@dataclasses.dataclass(frozen=True, eq=False)
class Maze:
    """A parsed maze: wall boxes, start and goal cells in world coordinates.

    ``goal_jitter`` is the half-width of the uniform noise added to a goal
    cell's centre; it must stay below half a cell so a goal is never inside a
    wall (the goal cell's neighbours may be walls).
    """

    grid: np.ndarray
    cell_size: float
    goal_jitter: float = 0.0
    merge_walls: bool = True

    def __post_init__(self):
        if not 0.0 <= self.goal_jitter < 0.5 * self.cell_size:
            raise ValueError("goal_jitter must lie in [0, cell_size / 2)")

    @classmethod
    def from_name(
        cls, name: str, cell_size: float, goal_jitter: float = 0.0, merge_walls: bool = True
    ) -> Maze:
        return cls(maze_grid(name), float(cell_size), float(goal_jitter), merge_walls)

    # -- geometry -------------------------------------------------------------
    @property
    def start_cell(self) -> tuple[int, int]:
        i, j = np.argwhere(self.grid == "R")[0]
        return int(i), int(j)

    def cell_center(self, i, j) -> np.ndarray:
        """World (x, y) = (cell·i, cell·j) of the centre of cell (row i, column j)."""
        return cell_center(i, j, self.cell_size)

    def _centers(self, symbol: str) -> np.ndarray:
        ij = np.argwhere(self.grid == symbol)
        return self.cell_center(ij[:, 0], ij[:, 1]).astype(np.float32)

    @property
    def wall_centers(self) -> np.ndarray:
        return self._centers("1")

    @property
    def goal_centers(self) -> np.ndarray:
        return self._centers("G")

    @property
    def start_xy(self) -> np.ndarray:
        """Centre of the R cell: where the robot starts, before the env's reset noise."""
        return self.cell_center(*self.start_cell).astype(np.float32)

    @property
    def wall_height(self) -> float:
        return 0.5 * self.cell_size

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """(x_min, x_max, y_min, y_max) of the whole grid, walls included."""
        rows, cols = self.grid.shape
        c = self.cell_size
        return -0.5 * c, (rows - 0.5) * c, -0.5 * c, (cols - 0.5) * c

    def wall_boxes(self) -> np.ndarray:
        """``[n, 4]`` (centre x, centre y, half x, half y) of this maze's wall boxes."""
        return wall_boxes(self.grid, self.cell_size, self.merge_walls)

    def cell_of(self, xy: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(row, column) of the cell containing a world position (JAX-friendly)."""
        i = jnp.floor(xy[..., 0] / self.cell_size + 0.5).astype(jnp.int32)
        j = jnp.floor(xy[..., 1] / self.cell_size + 0.5).astype(jnp.int32)
        return i, j

    def _lookup(self, xy: jax.Array, symbol: str, outside: bool) -> jax.Array:
        i, j = self.cell_of(jnp.asarray(xy))
        rows, cols = self.grid.shape
        inside = (i >= 0) & (i < rows) & (j >= 0) & (j < cols)
        hit = jnp.asarray(self.grid == symbol)[jnp.clip(i, 0, rows - 1), jnp.clip(j, 0, cols - 1)]
        return jnp.where(inside, hit, outside)

    def in_wall(self, xy: jax.Array) -> jax.Array:
        """True where a position lies inside a wall cell or outside the grid."""
        return self._lookup(xy, "1", True)

    def is_goal_cell(self, xy: jax.Array) -> jax.Array:
        return self._lookup(xy, "G", False)

    def coverage_grid(self, bins_per_cell: int = 2) -> dict:
        """A coverage grid over a square covering the maze, as plain data; wall bins are not free.

        The fields of ``collector.coverage.CoverageGrid`` (envs never import the collector).
        """
        x0, x1, y0, y1 = self.extent
        side = max(x1 - x0, y1 - y0)
        bins = bins_per_cell * int(round(side / self.cell_size))
        centres = (np.arange(bins) + 0.5) * side / bins
        xy = np.stack(np.meshgrid(x0 + centres, y0 + centres, indexing="ij"), axis=-1)
        free = ~np.asarray(self.in_wall(jnp.asarray(xy, jnp.float32)))
        return {"x_min": x0, "x_max": x0 + side, "y_min": y0, "y_max": y0 + side, "bins": bins, "free": free}

    # -- sampling ---------------------------------------------------------------
    def sample_goal(self, rng: jax.Array) -> jax.Array:
        """A goal (x, y): a G cell drawn uniformly, plus uniform jitter."""
        cell_rng, jitter_rng = jax.random.split(rng)
        centers = jnp.asarray(self.goal_centers)
        idx = jax.random.randint(cell_rng, (), 0, centers.shape[0])
        noise = jax.random.uniform(jitter_rng, (2,), minval=-self.goal_jitter, maxval=self.goal_jitter)
        return centers[idx] + noise

    # -- MJCF -------------------------------------------------------------------
    def wall_rectangles(self) -> list[tuple[int, int, int, int]]:
        """Wall cells as (row, col, n_rows, n_cols) blocks (see the module function)."""
        return wall_rectangles(self.grid, self.merge_walls)

    def wall_elements(self, contype: int, conaffinity: int, rgba: str = "0.7 0.5 0.3 1") -> list[ET.Element]:
        """Static box geoms of height 0.5·cell; one cell is a box of half-size 0.5·cell."""
        half_h = 0.5 * self.wall_height
        elems = []
        for k, (x, y, hx, hy) in enumerate(self.wall_boxes()):
            attrs = {
                "name": f"maze_wall_{k}",
                "type": "box",
                "pos": f"{x:.4f} {y:.4f} {half_h:.4f}",
                "size": f"{hx:.4f} {hy:.4f} {half_h:.4f}",
                "contype": str(contype),
                "conaffinity": str(conaffinity),
                "condim": "3",
                "rgba": rgba,
            }
            elems.append(ET.Element("geom", attrs))
        return elems


def insert_walls(xml: str, maze: Maze, contype: int, conaffinity: int) -> str:
    """The robot's MJCF with the maze's wall geoms added to its worldbody.

    ``contype``/``conaffinity`` must be chosen together with the robot's own
    bits: MuJoCo (and so Brax, which uses MJX's collision) only tests a pair
    when ``contype_a & conaffinity_b`` or ``contype_b & conaffinity_a`` is
    non-zero.
    """
    root = ET.fromstring(xml)
    worldbody = root.find("worldbody")
    if worldbody is None:
        raise ValueError("MJCF has no <worldbody>")
    for elem in maze.wall_elements(contype, conaffinity):
        worldbody.append(elem)
    return ET.tostring(root, encoding="unicode")


def set_geom_collision(xml: str, geom_names: dict[str, tuple[int, int]]) -> str:
    """Override ``contype``/``conaffinity`` of named geoms in an MJCF string."""
    root = ET.fromstring(xml)
    found = set()
    for geom in root.iter("geom"):
        name = geom.get("name")
        if name in geom_names:
            ct, ca = geom_names[name]
            geom.set("contype", str(ct))
            geom.set("conaffinity", str(ca))
            found.add(name)
    missing = set(geom_names) - found
    if missing:
        raise ValueError(f"geoms not found in MJCF: {sorted(missing)}")
    return ET.tostring(root, encoding="unicode")


class MazeTask:
    """The maze half of a robot-in-a-maze env, written once for the ant and the humanoid.

    List it before the robot env in the bases (``class AntMaze(MazeTask, Ant)``):
    the maze is built before the robot's ``__init__`` loads ``model_xml()``, the
    model gains the walls, the robot starts at the R cell's centre (before its
    own reset noise) and goals are drawn from G cells. A subclass states what
    differs: its cell size (its ``__init__``'s ``cell_size`` default), its robot's
    contacts (``robot_xml``) and the name of its robot's goal hook (an alias of
    ``maze_goal``).
    """

    maze: Maze

    def __init__(
        self, maze: str, cell_size: float, goal_jitter: float = 0.0, merge_walls: bool = True, **kwargs
    ):
        """``maze`` names a layout of ``GRIDS``; the maze exists before the robot env loads its model."""
        self.maze = Maze.from_name(maze, cell_size, goal_jitter, merge_walls)
        super().__init__(**kwargs)

    def robot_xml(self) -> str:
        """The robot's own model without walls; override to change its contacts."""
        return super().model_xml()

    def model_xml(self) -> str:
        """The robot with the maze's walls: ``contype=conaffinity=1``, as in the paper's code."""
        return insert_walls(self.robot_xml(), self.maze, contype=1, conaffinity=1)

    def start_xy(self, rng: jax.Array) -> jax.Array:
        """The R cell's centre: every episode starts there (the robot env adds its reset noise)."""
        return jnp.asarray(self.maze.start_xy)

    def maze_goal(self, rng: jax.Array, start_xy: jax.Array) -> jax.Array:
        """A goal (x, y) from the G cells; the start is ignored, the layout fixes it."""
        return self.maze.sample_goal(rng)

    def coverage_grid(self) -> dict:
        """Exploration coverage over the maze (its frame is not centred on the start)."""
        return self.maze.coverage_grid()


def draw_maze(ax, maze: Maze, goals: bool = True) -> None:
    """Draw walls (and goal cells, lightly) of a maze on a matplotlib axis."""
    from matplotlib.patches import Rectangle  # local: keeps matplotlib off every env's import path

    c = maze.cell_size
    for x, y in maze.wall_centers:
        ax.add_patch(Rectangle((x - c / 2, y - c / 2), c, c, color="0.35"))
    if goals:
        for x, y in maze.goal_centers:
            ax.add_patch(Rectangle((x - c / 2, y - c / 2), c, c, color="tab:green", alpha=0.08))
    x0, x1, y0, y1 = maze.extent
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_aspect("equal")
