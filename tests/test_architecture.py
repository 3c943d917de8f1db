"""The layout's rules, checked: lower layers never import higher ones, no import cycles,
modules stay small, and ``import ebmcmc`` stays light (docs/architecture.md)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "ebmcmc"

#: rooms of the library, lowest layer first; a module may import its own layer and lower ones
LAYERS: list[tuple[str, set[str]]] = [
    ("foundation", {"_random", "_checks", "_files", "_deprecation", "_interrupts", "arviz_bridge"}),
    ("energies", {"energy", "targets", "pyro_model"}),
    ("kernels", {"kernels"}),
    ("adaptation", {"adaptation"}),
    (
        "drivers",
        {
            "trace",
            "_trace_files",
            "_stream_files",
            "sampling",
            "ais",
            "convergence",
            "recording",
            "stream",
            "resume",
        },
    ),
    ("models", {"diffusion", "nn", "estimators"}),
    ("around", {"datasets", "evaluation", "diagnostics", "train"}),
    ("studies", {"studies"}),
    # applications, the package's own __init__/__main__, and the 0.1 module names kept for one
    # release as deprecation shims
    ("applications", {"app", "__init__", "__main__", "cli", "demo", "toy", "data", "metrics"}),
]

#: upward imports that exist only to keep a 0.1 name working for one release (removed in 0.3)
DEPRECATION_SHIMS = {
    ("ebmcmc.estimators.recovery", "ebmcmc.evaluation.grid"),  # log_prob_on_grid method
    ("ebmcmc.diagnostics", "ebmcmc.studies"),  # ebmcmc.diagnostics.stability & co
}

#: modules allowed over MAX_LINES, each with the reason its docstring gives
LONG_MODULES: dict[str, str] = {}
MAX_LINES = 600


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _layer(module: str) -> int:
    room = _room(module)
    for i, (_, rooms) in enumerate(LAYERS):
        if room in rooms:
            return i
    raise AssertionError(f"{module}: room {room!r} is in no layer; add it to LAYERS")


def _imports(module: str, path: Path) -> set[tuple[str, bool]]:
    """``(imported ebmcmc module, at module level)`` for every import in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_pkg = path.name == "__init__.py"
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    found = set()
    top_level = {id(n) for n in tree.body}

    def visit(node, top: bool):
        for child in ast.iter_child_nodes(node):
            here = top and id(child) in top_level
            if isinstance(child, ast.Import):
                for a in child.names:
                    if a.name.split(".")[0] == "ebmcmc":
                        found.add((a.name, here))
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    anchor = base[: len(base) - (child.level - 1)]
                    target = ".".join(anchor + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                if target.split(".")[0] != "ebmcmc":
                    continue
                for a in child.names:
                    sub = f"{target}.{a.name}"
                    found.add((sub if sub in MODULES else target, here))
            visit(child, here)

    visit(tree, True)
    return found


MODULES = _modules()


def test_every_module_sits_in_a_layer():
    for m in MODULES:
        _layer(m)


def test_lower_layers_never_import_higher_ones():
    bad = []
    for m, path in MODULES.items():
        for target, _ in _imports(m, path):
            if target not in MODULES or target == "ebmcmc" and _room(m) == "__init__":
                continue
            if _layer(target) > _layer(m) and (m, target) not in DEPRECATION_SHIMS:
                bad.append(f"{m} ({LAYERS[_layer(m)][0]}) imports {target} "
                           f"({LAYERS[_layer(target)][0]})")  # fmt: skip
    assert not bad, "\n".join(bad)


def test_no_import_cycles_at_module_level():
    graph = {
        m: {t for t, top in _imports(m, p) if top and t in MODULES and t != m}
        for m, p in MODULES.items()
    }
    # a package's __init__ importing its own submodules is the package itself
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(m: str):
        state[m] = 1
        stack.append(m)
        for t in graph[m]:
            if t.startswith(m + "."):
                continue
            if state.get(t) == 1:
                cycle = stack[stack.index(t) :] + [t]
                if not any(b.startswith(a + ".") for a, b in zip(cycle, cycle[1:], strict=False)):
                    raise AssertionError("import cycle: " + " -> ".join(cycle))
            elif state.get(t) is None:
                dfs(t)
        stack.pop()
        state[m] = 2

    for m in graph:
        if m not in state:
            dfs(m)


def test_modules_stay_small():
    long = {
        str(p.relative_to(ROOT)): n
        for p in MODULES.values()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    unexplained = {k: v for k, v in long.items() if k not in LONG_MODULES}
    assert not unexplained, f"modules over {MAX_LINES} lines: {unexplained}"


def test_layer_check_catches_an_upward_import(tmp_path):
    """The checker itself can fail: a kernel module importing the estimators is flagged."""
    fake = tmp_path / "bad.py"
    fake.write_text("from ..estimators import DiffusionRecoveryLikelihood\n")
    found = _imports("ebmcmc.kernels.bad", fake)
    assert ("ebmcmc.estimators", True) in found
    assert _layer("ebmcmc.estimators") > _layer("ebmcmc.kernels.bad")


@pytest.mark.parametrize("code", [
    "import ebmcmc",
    "import torch, ebmcmc; from ebmcmc.kernels import MALA; "
    "ebmcmc.sample(lambda x: (x**2).sum(-1), MALA(0.3), torch.zeros(4, 2), 5, progress=False)",
])  # fmt: skip
def test_import_and_a_kernel_run_stay_light(code):
    """ArviZ, xarray, pandas and matplotlib load only when a trace is converted, summarised,
    saved or plotted."""
    heavy = ("arviz", "xarray", "pandas", "matplotlib")
    probe = f"{code}; import sys; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         cwd=ROOT, check=True)  # fmt: skip
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
