"""The package's layers: no import cycles, a lower stage never imports a higher one, light imports.

Data flows one way (prior and simulator -> simulations -> training -> estimators -> sampling ->
diagnostics, multilevel and MLMC -> bench and CLI); :data:`STAGES` lists the stages bottom-up and
every module of ``src/telescope`` must belong to one (the longest matching dotted prefix wins).
Imports are read from the source (also those inside functions), except imports under
``if __name__ == "__main__":`` and ``if TYPE_CHECKING:``.
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

SRC = pathlib.Path(__file__).resolve().parents[1] / "src"

#: stages bottom-up; a module may import modules of its own stage or of lower stages only
STAGES: list[tuple[str, list[str]]] = [
    ("core", ["telescope._version", "telescope._compat", "telescope.utils"]),
    # figures draw arrays and import nothing of the pipeline, so any stage may draw
    ("foundations", ["telescope.priors", "telescope.nn", "telescope.diffusion", "telescope.metrics",
                     "telescope.calibration",
                     "telescope.plots", "telescope.mlmc_plots"]),
    ("simulation", ["telescope.simulation", "telescope.simulators", "telescope.campaign", "telescope.store",
                    "telescope.simulate", "telescope.ladder"]),
    ("training", ["telescope.training", "telescope.train"]),
    ("samplers", ["telescope.samplers"]),
    ("diagnostics", ["telescope.diagnostics"]),
    ("estimators", ["telescope.estimators", "telescope.interop"]),  # interop: adapters of the estimator protocol
    ("tasks", ["telescope.tasks"]),
    ("multilevel and MLMC", ["telescope.multilevel", "telescope.mlmc", "telescope.mlmc_diffusion",
                             "telescope.mlmc_experiments", "telescope.mlmc_npse"]),
    ("facade", []),  # the package root ``telescope``: nothing below may import it
    ("applications", ["telescope.bench", "telescope.cli", "telescope.cli_bench", "telescope.cli_mlmc", "telescope.cli_pipeline",
                      "telescope.cli_simulate"]),
]

#: known exceptions (importer, imported), each with its reason
ALLOWED_UPWARD = {
    # metrics accept an sbi posterior too: wrapped by the adapter only when one is passed (issue 21)
    ("telescope.metrics.hpd", "telescope.interop.sbi"),
    ("telescope.calibration", "telescope.interop.sbi"),  # tarp_coverage accepts an sbi posterior, as coverage does
}

HEAVY = ("matplotlib", "dask", "distributed", "sklearn")


def _modules() -> dict[str, tuple[pathlib.Path, bool]]:
    out = {}
    for path in (SRC / "telescope").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


def _skipped(node: ast.If) -> bool:
    t = node.test
    if isinstance(t, ast.Name) and t.id == "TYPE_CHECKING":
        return True
    return (isinstance(t, ast.Compare) and isinstance(t.left, ast.Name) and t.left.id == "__name__"
            and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in t.comparators))


def _imports(tree: ast.AST):
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _skipped(node):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        yield from _imports(node)


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    edges: dict[str, set[str]] = {}
    for name, (path, is_pkg) in mods.items():
        package = name if is_pkg else name.rsplit(".", 1)[0]
        out: set[str] = set()
        for node in _imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in mods else mod for a in node.names]
            out.update(t for t in targets if t == "telescope" or t.startswith("telescope."))
        edges[name] = out - {name}
    return edges


def _stage(module: str) -> int:
    if module == "telescope":
        return next(i for i, (name, _) in enumerate(STAGES) if name == "facade")
    best, level = "", None
    for i, (_, prefixes) in enumerate(STAGES):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > len(best):
                best, level = p, i
    if level is None:
        raise AssertionError(f"module {module} belongs to no stage: add it to STAGES in {__file__}")
    return level


def _shims() -> set[str]:
    """Deprecated module paths (modules that call ``telescope._compat.alias``)."""
    def calls_alias(tree: ast.Module) -> bool:
        return any(isinstance(n, ast.Expr) and isinstance(n.value, ast.Call) and getattr(n.value.func, "id", "") == "alias"
                   for n in tree.body)

    return {name for name, (path, _) in _modules().items() if calls_alias(ast.parse(path.read_text()))}


def test_every_module_has_a_stage():
    for module in _modules():
        _stage(module)


def test_no_import_cycles():
    edges = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(edges.get(m, ())):
            if state.get(n) == 1:
                cycle = stack[stack.index(n):] + [n]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)


def test_lower_stages_never_import_higher_ones():
    bad = [f"{m} ({STAGES[_stage(m)][0]}) imports {n} ({STAGES[_stage(n)][0]})"
           for m, targets in sorted(_graph().items()) for n in sorted(targets) if _stage(n) > _stage(m) and (m, n) not in ALLOWED_UPWARD]
    assert not bad, "\n".join(bad)


#: modules still importing old paths, owned by work in progress elsewhere (no warning fires for them)
OLD_PATH_USERS: tuple[str, ...] = ()


def test_library_code_never_imports_a_deprecated_path():
    shims = _shims()
    bad = [f"{m} imports {n}" for m, targets in sorted(_graph().items())
           if m not in shims and not m.startswith(OLD_PATH_USERS) for n in sorted(targets) if n in shims]
    assert not bad, "\n".join(bad)


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-c", code], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_import_telescope_is_light_and_warns_of_nothing():
    loaded = _run(f"import sys, telescope; print([m for m in {HEAVY!r} if m in sys.modules])").strip()
    assert loaded == "[]", f"import telescope loaded {loaded}"


def test_deprecated_paths_still_work():
    """Each old path imports (in one fresh process) and warns, and the public functions stay callable.

    Old paths that telescope itself still imports (OLD_PATH_USERS) are loaded silently by ``import telescope``;
    they cannot warn later.
    """
    shims = sorted(_shims())
    code = ("import importlib, sys, warnings\n"
            "import telescope as ts\n"
            "loaded = set(sys.modules)\n"
            f"for old in {shims!r}:\n"
            "    with warnings.catch_warnings(record=True) as w:\n"
            "        warnings.simplefilter('always')\n"
            "        importlib.import_module(old)\n"
            "    warned = any(issubclass(x.category, DeprecationWarning) and old in str(x.message) for x in w)\n"
            "    assert warned or old in loaded, old\n"
            "assert callable(ts.train) and callable(ts.simulate)\n"
            "print(len(" + repr(shims) + "))\n")
    assert _run(code).strip() == str(len(shims))
