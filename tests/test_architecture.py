"""The package's shape: layers point one way, no import cycles, long modules say why (docs/architecture.md).

Every module of ``compress/`` is parsed (ast, nothing is imported) and its imports of other compress
modules are collected, at module level and inside functions. The checks:

(a) no cycle among module-level imports. Importing ``compress.a.b`` runs ``compress/a/__init__.py``
    first, so an import also depends on the packages above its target (all but ``compress`` itself,
    the facade that every process enters first);
(b) no module imports, at any level, from a layer above its own (:data:`LAYERS`);
(c) a module of more than 500 lines says in its docstring, on a line starting "Why this module is
    long:", why it is not split.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "compress"

#: Lowest first. A module belongs to the layer of the longest prefix naming it (the package itself or a
#: module or package below it). It may import from its own layer and the layers below, never above.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("core", (
        "compress.models", "compress.data", "compress.metrics", "compress.io", "compress.transforms",
        "compress.normalization", "compress.tta", "compress.devices", "compress.files", "compress.provenance",
        "compress._schema", "compress.weights",
    )),
    ("training, evaluation, deploy", ("compress.training", "compress.evaluation", "compress.deploy")),
    ("facade", ("compress",)),  # compress/__init__.py: the public names, re-exported from the layers below
    ("recipes", ("compress.recipes",)),
    ("bench", ("compress.bench", "compress.runfolder", "compress.report", "compress.search")),
    ("cli", ("compress.cli", "compress.__main__")),
]

#: Imports from a layer above that are known and owned by changes in flight. Each entry must still occur
#: (the test says when one can go); empty this list as those changes land.
ALLOWED_UPWARD: dict[tuple[str, str], str] = {
    # the deprecated alias compress.deploy.measure_run calls compress.runfolder.measure_run, where it moved
    ("compress.deploy", "compress.runfolder"): "deprecated alias",
}

LONG = 500
#: Modules over LONG lines without a "Why this module is long:" line, owned by changes in flight that
#: split them (bench.py, report.py, cli.py, trainer.py: run folder / report / cli sub-commands;
#: transforms/prune.py: the prune package). Empty this set as they land.
ALLOWED_LONG: set[str] = set()


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module (a module of compress/, or the package a name comes from)
    line: int
    module_level: bool  # False: inside a function (runs when it is called) or under `if TYPE_CHECKING:`


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _resolve(source: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module name ``from <node.module>`` refers to, seen from ``source``."""
    if node.level == 0:
        return node.module or ""
    base = source.split(".") if is_package else source.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(source: str, path: Path) -> list[Import]:
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    found: list[Import] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            # a function body, and an `if TYPE_CHECKING:` block (annotations only), do not run at import
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) or (
                isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name == "compress" or alias.name.startswith("compress."):
                        found.append(Import(source, alias.name, child.lineno, not in_function))
            elif isinstance(child, ast.ImportFrom):
                module = _resolve(source, is_package, child)
                if module == "compress" or module.startswith("compress."):
                    for alias in child.names:  # `from pkg import sub` imports the submodule pkg.sub
                        sub = f"{module}.{alias.name}"
                        found.append(Import(source, sub if sub in MODULES else module, child.lineno, not in_function))
            visit(child, inner)

    visit(tree, False)
    return found


IMPORTS = [imp for name, path in MODULES.items() for imp in _imports(name, path)]


def _layer(module: str) -> int:
    best = None
    for level, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > len(best[1]):
                    best = (level, prefix)
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS in tests/test_architecture.py")
    return best[0]


def _depends_on(imp: Import) -> list[str]:
    """What executing ``imp`` runs: its target, and each package above it that the importer is not inside."""
    parts = imp.target.split(".")
    out = [imp.target]
    for i in range(2, len(parts)):
        package = ".".join(parts[:i])
        if not (imp.source == package or imp.source.startswith(package + ".")):
            out.append(package)
    return out


def test_the_walk_sees_every_module_and_both_kinds_of_import():
    assert {"compress", "compress.training.config", "compress.models.checkpoints", "compress.cli"} <= set(MODULES)
    kinds = {imp.module_level for imp in IMPORTS}
    assert kinds == {True, False}  # e.g. deploy.measure_run's import of compress.runfolder is inside a function
    assert any(i.source == "compress.cli" and i.target == "compress.bench" and i.module_level for i in IMPORTS)  # `from . import bench`


def test_every_module_has_a_layer():
    for module in MODULES:
        _layer(module)


def test_no_import_cycle_at_module_level():
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for imp in IMPORTS:
        if imp.module_level:
            graph[imp.source].update(t for t in _depends_on(imp) if t in MODULES and t != imp.source)
    cycles = _cycles(graph)
    assert not cycles, "import cycles at module level: " + "; ".join(" -> ".join(c + c[:1]) for c in cycles)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each as a list of modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return out


def test_the_cycle_finder_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_from_a_layer_above():
    upward = {}
    for imp in IMPORTS:
        if imp.target in MODULES and _layer(imp.target) > _layer(imp.source):
            upward.setdefault((imp.source, imp.target), imp)
    names = [name for name, _ in LAYERS]
    bad = [f"{imp.source} (layer {names[_layer(imp.source)]!r}, line {imp.line}) imports {imp.target} "
           f"(layer {names[_layer(imp.target)]!r})" for key, imp in sorted(upward.items()) if key not in ALLOWED_UPWARD]
    assert not bad, "imports from a layer above: " + "; ".join(bad)
    stale = sorted(set(ALLOWED_UPWARD) - set(upward))
    assert not stale, f"ALLOWED_UPWARD lists imports that are gone, remove them: {stale}"


def test_training_evaluation_and_deploy_import_only_the_core():
    """Layer 1's three parts are siblings: evaluate() needs no trainer, the trainer no exporter."""
    crossing = [f"{i.source} imports {i.target}" for i in IMPORTS
                if i.target in MODULES and _layer(i.source) == _layer(i.target) == 1
                and i.source.split(".")[1] != i.target.split(".")[1]]
    assert not crossing, "; ".join(crossing)


def _docstring(path: Path) -> str:
    return ast.get_docstring(ast.parse(path.read_text())) or ""


def test_long_modules_say_why():
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > LONG}
    unexplained = [f"{name} ({n} lines)" for name, n in sorted(long.items())
                   if name not in ALLOWED_LONG
                   and not any(line.startswith("Why this module is long:") for line in _docstring(MODULES[name]).splitlines())]
    assert not unexplained, (f"modules over {LONG} lines without a 'Why this module is long:' line in their docstring "
                             f"(split them, or say why not): {', '.join(unexplained)}")
    stale = sorted(name for name in ALLOWED_LONG if name not in long)
    assert not stale, f"ALLOWED_LONG lists modules that are no longer over {LONG} lines, remove them: {stale}"


def test_the_layer_map_matches_the_brief_for_modules_still_to_come():
    """compress/transforms/prune/ (core), runfolder.py, report/ and search/ (bench) have their place."""
    assert _layer("compress.transforms.prune.config") == 0
    assert _layer("compress.runfolder") == _layer("compress.report.tables") == _layer("compress.search") == 4
    assert _layer("compress.bench") < _layer("compress.cli")


def test_import_compress_runs_no_git():
    """Provenance is read on first use: importing the package runs no ``git``."""
    code = ("import subprocess, sys\n"
            "started = []\n"
            "real = subprocess.Popen.__init__\n"
            "def spy(self, args, *a, **k):\n"
            "    started.append(args)\n"
            "    real(self, args, *a, **k)\n"
            "subprocess.Popen.__init__ = spy\n"
            "import compress\n"
            "print(started)\n")
    env_free = {k: v for k, v in os.environ.items() if k != "COMPRESS_GIT_COMMIT"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT, env=env_free)
    assert "git" not in out.stdout, out.stdout  # (a library may run e.g. ldconfig; that is not ours)
    from compress import provenance

    assert provenance.provenance()["git_commit"] == provenance.running_commit() != ""


def test_moved_names_keep_their_old_import_paths():
    """Code written against the old places (and the modules other changes own) keeps working."""
    import compress
    from compress import _schema, devices, io, normalization, recipes, tta
    from compress.training import augment, config, distributed

    assert config.CIFAR10_MEAN is normalization.CIFAR10_MEAN and config.IMAGENET_STD is normalization.IMAGENET_STD
    assert config.TTA_LEVELS is tta.TTA_LEVELS
    assert augment.normalize is normalization.normalize and augment.tta_logits is tta.tta_logits
    assert distributed.check_device is devices.check_device
    assert recipes._merge is _schema.merge and io._unreadable is io.load_refusal
    assert compress.training.check_step is config.check_step
    assert set(augment._STEPS) == set(config.AUGMENT_PARAMS)  # every augmentation named in config is implemented
