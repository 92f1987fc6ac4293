"""The package layout DESIGN.md fixes: our own `agents`, and imports in one direction only.

tools <- agents <- graph <- training: a layer imports only the layers before it, and nothing
imports `training` but graph/cli.py, lazily (inside a function), and only `training.cli`.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ["tools", "agents", "graph", "training"]  # each may import only those before it
OUTSIDE = {"tests", "benchmarks", "examples", "scripted", "conftest"}  # no layer imports these
# modules added after the layering was first tested: the scan must reach them
MUST_SCAN = ["tools/types.py", "tools/corpora.py", "tools/paths.py", "graph/console.py",
             "training/policy.py", "training/curriculum.py", "training/rationales.py",
             "agents/kvcache.py", "graph/cli.py", "training/cli.py"]
LAZY_MOUNT = ("graph/cli.py", "training.cli")  # the one allowed import of training


def test_agents_is_ours_not_openai_agents():
    import agents

    assert Path(agents.__file__).resolve().is_relative_to(REPO)


def imports(path: Path) -> list[tuple[str, bool]]:
    """(module, at module level?) for every import in the file, `importlib.import_module("x")`
    with a literal name included. Relative imports stay inside their package: skipped."""
    tree = ast.parse(path.read_text())
    top = set(map(id, tree.body))
    for node in tree.body:  # `if TYPE_CHECKING:` / `try:` blocks at module level run on import
        if isinstance(node, ast.If | ast.Try):
            top |= {id(n) for n in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, id(node) in top))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.append((node.args[0].value, False))
    return found


def layer_files() -> dict[str, list[Path]]:
    return {layer: sorted((REPO / layer).rglob("*.py")) for layer in LAYERS}


def violations(rel: str, layer: str, found: list[tuple[str, bool]]) -> list[str]:
    """What is wrong with the imports of one file of `layer`."""
    later = set(LAYERS[LAYERS.index(layer) + 1:])
    bad = []
    for module, at_top in found:
        root = module.split(".")[0]
        if root in OUTSIDE:
            bad.append(f"{rel} imports {module} (not part of the library)")
        elif root in later and not ((rel, module) == LAZY_MOUNT and not at_top):
            bad.append(f"{rel} imports {module}" + (" at module level" if at_top else ""))
    return bad


def test_every_module_imports_only_earlier_layers():
    files = layer_files()
    scanned = {p.relative_to(REPO).as_posix() for paths in files.values() for p in paths}
    assert set(MUST_SCAN) <= scanned
    bad = [v for layer, paths in files.items() for p in paths
           for v in violations(p.relative_to(REPO).as_posix(), layer, imports(p))]
    assert bad == []
    cli_imports = [m for m, _ in imports(REPO / "graph" / "cli.py") if m.startswith("training")]
    assert cli_imports == ["training.cli"]  # the lazy mount is really there


@pytest.mark.parametrize("rel,layer,source,expected", [
    ("tools/types.py", "tools", "from agents.models import X", "tools/types.py imports agents.models"),
    ("agents/kvcache.py", "agents", "def f():\n    import graph.store",
     "agents/kvcache.py imports graph.store"),
    ("graph/console.py", "graph", "from training.cli import register", "imports training.cli"),
    ("graph/cli.py", "graph", "from training.cli import register",
     "graph/cli.py imports training.cli at module level"),
    ("graph/cli.py", "graph", "def mount():\n    from training.grpo import x",
     "graph/cli.py imports training.grpo"),
    ("graph/cli.py", "graph", "if TYPE_CHECKING:\n    from training.cli import r",
     "at module level"),
    ("tools/corpora.py", "tools", "importlib.import_module('graph.run')",
     "tools/corpora.py imports graph.run"),
    ("training/policy.py", "training", "from scripted import ScriptedChatModel",
     "not part of the library"),
])
def test_the_check_catches_imports_up_the_layers(tmp_path, rel, layer, source, expected):
    path = tmp_path / "m.py"
    path.write_text(source + "\n")
    (found,) = violations(rel, layer, imports(path))
    assert expected in found


def test_the_lazy_mount_passes_the_check(tmp_path):
    path = tmp_path / "cli.py"
    path.write_text("def _mount():\n    from training.cli import register\n")
    assert violations("graph/cli.py", "graph", imports(path)) == []
    assert violations("training/grpo.py", "training", [("graph.run", True), ("agents", True)]) == []


def loaded_after_import(module: str) -> set[str]:
    """Top-level modules a fresh interpreter holds after importing `module`."""
    code = f"import json, sys, {module}; print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, timeout=120, check=True)
    return set(json.loads(proc.stdout))


def test_plain_types_and_the_cli_import_nothing_heavy():
    heavy = {"lancedb", "httpx", "trafilatura", "torch", "transformers", "pyarrow",
             "sentence_transformers", "langgraph"}
    types_loaded = loaded_after_import("tools.types")
    assert "pydantic" in types_loaded and types_loaded & heavy == set()
    cli_loaded = loaded_after_import("graph.cli")  # `sleuth --help` starts fast
    assert "typer" in cli_loaded and cli_loaded & heavy == set()
