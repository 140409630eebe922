"""The house: no import cycle in bench/, modules of a readable size, each saying what it owns, ruff clean."""
import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 300


def bench_modules() -> dict[str, Path]:
    return {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
            for p in (ROOT / "bench").rglob("*.py")}


def imports(path: Path, package: str) -> set[str]:
    """Every bench.* module ``path`` imports, at its top or inside a function (a lazy import is a
    dependency too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module if node.level == 0 else ".".join(package.split(".")[: -node.level] + [node.module])
            found |= {base} | {f"{base}.{a.name}" for a in node.names}
    return {name for name in found if name.startswith("bench.")}


def test_bench_has_no_import_cycle():
    modules = bench_modules()
    graph = {m: {i for i in imports(p, m) if i in modules and i != m} for m, p in modules.items()}
    # a package's __init__ importing nothing is fine; a module importing its own package is not a cycle
    graph = {m: {i for i in deps if not m.startswith(i + ".")} for m, deps in graph.items()}
    state, cycle = {}, []

    def visit(m, path):
        state[m] = "open"
        for dep in sorted(graph[m]):
            if state.get(dep) == "open":
                cycle.append(path[path.index(dep):] + [dep] if dep in path else [m, dep])
            elif dep not in state:
                visit(dep, path + [dep])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycle, "import cycles: " + "; ".join(" -> ".join(c) for c in cycle)


def test_impls_imports_nothing_from_bench():
    """The forms keep their contract (impls.contract, EpochData included) without the harness."""
    found = {f"{p.relative_to(ROOT)}: {name}" for p in (ROOT / "impls").rglob("*.py")
             for name in imports(p, "impls")}
    assert not found, found


def test_the_runner_loads_no_drawing_and_each_module_imports_alone():
    code = ("import sys, bench.timing.runner, bench.runs.store, bench.timing.cell; "
            "assert 'matplotlib' not in sys.modules")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_a_run_of_eager_forms_imports_no_dynamo_scipy_or_torchvision():
    """What every run does (the CLI's parser, the run's metadata, a median's interval) imports none of them: each
    costs a second or two of every process (torchvision's import imports torch._dynamo)."""
    code = ("import sys; from bench import cli; cli.make_parser(); from bench.runs.meta import environment; "
            "environment(); from bench.regress.stats import median_ci; median_ci(list(range(50))); "
            "loaded = [m for m in ('torch._dynamo', 'scipy', 'torchvision') if m in sys.modules]; "
            "assert not loaded, loaded")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_modules_are_small_and_say_what_they_own():
    for name, path in bench_modules().items():
        lines = path.read_text().count("\n")
        assert lines <= MAX_LINES, f"{name}: {lines} lines (over {MAX_LINES})"
        doc = ast.get_docstring(ast.parse(path.read_text()))
        assert doc and len(doc) > 40, f"{name}: no docstring saying what it owns"


@pytest.mark.skipif(not shutil.which("ruff", path=str(Path(sys.executable).parent)) and not shutil.which("ruff"),
                    reason="ruff not installed (pip install -e '.[dev]')")
def test_ruff_is_clean():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    proc = subprocess.run([ruff, "check", "bench", "impls", "tests"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
