"""The package layout DESIGN.md fixes: our own `agents`, and imports in one direction only."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAYERS = ["tools", "agents", "graph", "training"]  # each may import only those before it


def test_agents_is_ours_not_openai_agents():
    import agents

    assert Path(agents.__file__).resolve().is_relative_to(REPO)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_dependencies_point_one_way():
    for i, layer in enumerate(LAYERS):
        forbidden = set(LAYERS[i + 1:])
        for path in (REPO / layer).rglob("*.py"):
            if layer == "graph" and path.name == "cli.py":
                forbidden_here = forbidden - {"training"}  # training/cli.py mounts lazily
            else:
                forbidden_here = forbidden
            bad = _imports(path) & forbidden_here
            assert not bad, f"{path.relative_to(REPO)} imports {bad}"
