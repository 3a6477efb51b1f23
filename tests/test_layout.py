"""The tree keeps its architecture: light subpackages stay free of torch, no import cycles,
no module over MAX_LINES (issue 11's rules, checked so that they stay true)."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MAX_LINES = 400
# Package folder on disk -> its import name (kernels/ and export/ install inside dad_edge).
ROOTS = {"dad_edge": "dad_edge", "export": "dad_edge.export", "kernels": "dad_edge.kernels"}
# The torch side of the runtime: everything else in these subpackages must load without torch.
TORCH_MODULES = {"dad_edge.runtime.fused", "dad_edge.runtime.backends.torch_backend",
                 "dad_edge.runtime.backends.cuda_graphs"}
LIGHT_PACKAGES = ("data", "artifacts", "stream", "runtime", "baselines", "report", "serving")


def modules():
    """import name -> file, for every module of the three roots."""
    out = {}
    for folder, name in ROOTS.items():
        for f in sorted((REPO / folder).rglob("*.py")):
            parts = list(f.relative_to(REPO / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([name] + parts)] = f
    return out


def module_level_imports(name: str, path: Path, known) -> set:
    """Modules of ours that `name` imports at module level (not inside functions or TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for sub in ([node] if not isinstance(node, (ast.If, ast.Try)) else ast.walk(node)):
            if isinstance(sub, ast.Import):
                found |= {a.name for a in sub.names}
            elif isinstance(sub, ast.ImportFrom):
                base = sub.module or ""
                if sub.level:
                    parts = package.split(".")[:len(package.split(".")) - sub.level + 1]
                    base = ".".join(parts + ([sub.module] if sub.module else []))
                found.add(base)
                found |= {f"{base}.{a.name}" for a in sub.names}
    return {m for m in found if m in known and m != name}


def test_no_import_cycles():
    mods = modules()
    graph = {n: module_level_imports(n, p, mods) for n, p in mods.items()}
    # A package's __init__ importing its own children is the normal direction, not a cycle.
    for n, deps in graph.items():
        graph[n] = {d for d in deps if not d.startswith(n + ".")}
    state, stack, cycles = {}, [], []

    def visit(n):
        state[n] = "open"
        stack.append(n)
        for d in sorted(graph[n]):
            if state.get(d) == "open":
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[n] = "done"

    for n in sorted(graph):
        if n not in state:
            visit(n)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_cycle_check_sees_a_cycle(tmp_path):
    """The walker above reads relative imports right: a planted pair of modules is found."""
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("from .b import x\n")
    b.write_text("from . import a\n")
    known = {"pkg.a", "pkg.b"}
    assert module_level_imports("pkg.a", a, known) == {"pkg.b"}
    assert module_level_imports("pkg.b", b, known) == {"pkg.a"}


def test_no_module_over_the_line_limit():
    long = {str(p.relative_to(REPO)): n for p in modules().values()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these modules (over {MAX_LINES} lines): {long}"


@pytest.mark.parametrize("package", LIGHT_PACKAGES)
def test_light_packages_never_import_torch(package):
    names = sorted(n for n in modules() if (n == f"dad_edge.{package}" or n.startswith(f"dad_edge.{package}."))
                   and n not in TORCH_MODULES)
    assert names
    script = ("import importlib, sys\n"
              f"for n in {names!r}:\n"
              "    importlib.import_module(n)\n"
              "    assert 'torch' not in sys.modules, n + ' imports torch'\n"
              "print('ok')\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
