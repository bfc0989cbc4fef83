"""The layout keeps its shape: each layer imports only the layers before it (lazy imports
inside functions included), no import cycles, no module over 600 lines and no function
over 60, and at most a dozen modules at the package's top."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "newsletter"

# The layers, first to last: a module may import its own layer and those before it.
LAYERS = (
    "newsletter.errors",
    "newsletter.words",
    "newsletter.files",
    "newsletter.pacing",
    "newsletter.http",
    "newsletter.shipped",
    "newsletter.logs",
    "newsletter.config",
    "newsletter.models",
    "newsletter.select",
    "newsletter.store",
    "newsletter.lifecycle",
    "newsletter.archive",
    "newsletter.publish",
    "newsletter.mail",
    "newsletter.app",
    "newsletter.web",
    "newsletter.service",
    "newsletter.cli",
    # ``python -m newsletter`` is the command line too.
    "newsletter.__main__",
)


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if "migrations" in path.parts:
            continue  # Alembic revisions are written out in full, whatever their length
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _layer(module: str) -> int:
    found = -1
    for index, prefix in enumerate(LAYERS):
        if module == prefix or module.startswith(prefix + "."):
            found = index
    return found


def _imports(path: Path, *, top_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    names = set()
    for node in nodes:
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.startswith("newsletter")
        ):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                names.add(sub if sub in MODULES else node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.startswith("newsletter"))
    return names


def test_every_module_belongs_to_a_layer() -> None:
    assert [m for m in MODULES if m != "newsletter" and _layer(m) < 0] == []


def test_no_module_imports_a_layer_above_its_own() -> None:
    upward = [
        f"{module} imports {target}"
        for module, path in MODULES.items()
        for target in _imports(path, top_level_only=False)
        if module != "newsletter" and _layer(target) > _layer(module)
    ]
    assert upward == []


def test_no_import_cycles() -> None:
    graph = {m: _imports(p, top_level_only=True) & set(MODULES) for m, p in MODULES.items()}
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = 1
        for target in sorted(graph[module]):
            if target.startswith(module + ".") or module.startswith(target + "."):
                continue  # a package and its own modules
            if state.get(target) == 1:
                return [*path, module, target]
            if target not in state and (cycle := visit(target, [*path, module])):
                return cycle
        state[module] = 2
        return None

    for module in graph:
        if module not in state:
            assert visit(module, []) is None


def test_modules_and_functions_stay_short() -> None:
    long_modules = []
    long_functions = []
    for module, path in MODULES.items():
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > 600:
            long_modules.append(module)
        for node in ast.walk(ast.parse(text)):
            # From the def line to the last line: decorators are not the body.
            if (
                isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                and (node.end_lineno or node.lineno) - node.lineno + 1 > 60
            ):
                long_functions.append(f"{module}.{node.name}")
    assert long_modules == []
    assert long_functions == []


def test_the_package_top_keeps_at_most_a_dozen_modules() -> None:
    top = [p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__")]
    assert len(top) <= 12, sorted(top)
