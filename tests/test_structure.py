"""The three parts and their layering, read from the source: the plugin, the tools, the evidence.

tools (fairseq_admin_tools) <- plugin (fairseq_admin) <- evidence (fairseq_admin_evidence): each part imports only
the parts before it, no module imports itself back through others, and the tools load neither torch nor fairseq.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

PARTS = ["fairseq_admin_tools", "fairseq_admin", "fairseq_admin_evidence"]  # each may import those before it


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module an import statement in the file names (at any depth: lazy imports count too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def import_graph() -> dict[str, set[str]]:
    """Our modules and the modules of ours each one imports.

    ``from package import module`` counts as importing the module only: the package's ``__init__`` runs
    first in any case, and counting it would make every plugin module "import" the plugin back.
    """
    modules = {module_name(p): p for part in PARTS for p in (REPO / part).glob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = {m for m in imports_of(path) if m in modules and m != name}
        graph[name] = {m for m in targets if not any(t.startswith(m + ".") for t in targets)}
    return graph


def part_of(module: str) -> str:
    return module.split(".")[0]


def test_each_part_imports_only_the_parts_before_it():
    wrong = [f"{module} imports {target}" for module, targets in import_graph().items() for target in targets
             if PARTS.index(part_of(target)) > PARTS.index(part_of(module))]
    assert not wrong, wrong


def test_no_import_loop():
    graph = import_graph()
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                pytest.fail(f"import loop: {' -> '.join(path[path.index(target):] + [target])}")
            if target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_the_tools_import_neither_torch_nor_fairseq_at_module_level():
    """(files.torch_save_atomically imports torch when it is called: only the plugin's checkpoint writers do.)"""
    heavy = []
    for path in (REPO / "fairseq_admin_tools").glob("*.py"):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                heavy += [f"{path.name}: {n}" for n in names if n.split(".")[0] in ("torch", "fairseq")]
    assert not heavy, heavy


@pytest.mark.parametrize("tool", ["corpora", "prepare", "evaluate", "summary", "plugin_dir", "monitor",
                                  "monitor_records", "figures"])
def test_importing_a_tool_loads_neither_torch_nor_fairseq(tool: str):
    code = (f"import sys, fairseq_admin_tools.{tool}; "
            "print(sorted(m for m in ('torch', 'fairseq', 'fairseq_admin') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_importing_the_evidence_package_loads_nothing_heavy():
    code = ("import sys, fairseq_admin_evidence.convergence, fairseq_admin_evidence.outputs; "
            "print(sorted(m for m in ('torch', 'fairseq', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
