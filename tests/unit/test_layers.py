"""The import layering of effreason_agents and router_training, checked statically.

Every module is parsed with :mod:`ast` (nothing is imported or executed), every
import is collected -- at module level, under ``TYPE_CHECKING`` and inside
functions -- and checked against the layer diagram in DESIGN.md::

    cli/         the `effreason` command
    evaluation/  may import anything above core except cli; nothing at run time imports it
    server/      the OpenAI-compatible HTTP server (when it exists)
    langchain/   ChatCostAware, CostAwareMiddleware, callbacks
    graph/       LangGraph state, nodes, builders
    engine/      policy + attempt runner + services
    adapters/    tiers, model servers, ledger/store backends, artifact files
    core/        pure: no sqlite, HTTP, LangChain client or file I/O imports
    errors.py, config.py   the base every layer may import

Training code (``router_training``) imports the library, never the reverse.
"""

from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass
from pathlib import Path

__all__: list[str] = []

REPO = Path(__file__).resolve().parents[2]
LIBRARY = "effreason_agents"
TRAINING = "router_training"

# Layer ranks, lowest first: a module may import its own layer or a lower one, never a
# higher one. Reads bottom-up like DESIGN.md's diagram.
LAYER_RANK: dict[str, int] = {
    "base": 0,  # effreason_agents/errors.py, effreason_agents/config.py
    "core": 1,
    "adapters": 2,
    "engine": 3,
    "graph": 4,
    "langchain": 5,
    "server": 6,
    "evaluation": 7,  # offline: never imported at run time (see EVALUATION_IMPORTERS)
    "cli": 8,
    "training": 9,  # router_training: imports the library, never the reverse
}

BASE_MODULES = {f"{LIBRARY}.errors", f"{LIBRARY}.config"}

# What the base modules may import from the package, per import kind.
# errors: nothing at module level; core records/money only for typing or lazily inside a
# function (to format a message). config: errors at module level, nothing else.
BASE_ALLOWED: dict[str, dict[str, tuple[str, ...]]] = {
    f"{LIBRARY}.errors": {"module": (), "typing": (f"{LIBRARY}.core",), "lazy": (f"{LIBRARY}.core",)},
    f"{LIBRARY}.config": {
        "module": (f"{LIBRARY}.errors",),
        "typing": (f"{LIBRARY}.errors",),
        "lazy": (f"{LIBRARY}.errors",),
    },
}

# core is pure: these top-level packages (stdlib or third-party) do I/O or are clients.
CORE_FORBIDDEN_TOP_LEVEL = frozenset(
    {
        "sqlite3",
        "httpx",
        "openai",
        "langchain_openai",
        "langgraph",
        "psycopg",
        "psycopg2",
        "psycopg_pool",
        "requests",
        "urllib",
        "urllib3",
        "http",
        "aiohttp",
        "socket",
        "subprocess",
        "sqlalchemy",
        "asyncpg",
    }
)

# Who may import effreason_agents.evaluation: itself, the CLI, and offline training code.
EVALUATION_IMPORTERS = ("evaluation", "cli", "training")
# Who may import effreason_agents.cli: only the CLI itself (the console entry point names
# it from pyproject.toml, which is not Python).
CLI_IMPORTERS = ("cli",)
# Who may import router_training from the library: only CLI commands, and only lazily.
TRAINING_LAZY_IMPORTERS = ("cli",)


@dataclass(frozen=True)
class Import:
    """One import statement's edge: ``importer`` imports ``target`` at ``line``."""

    importer: str
    path: Path
    line: int
    target: str
    kind: str  # "module" (executed on import), "typing" (under TYPE_CHECKING), "lazy" (in a function)
    text: str

    def where(self, root: Path) -> str:
        return f"{self.path.relative_to(root)}:{self.line}: `{self.text}` ({self.kind})"


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    tree: ast.Module
    is_package: bool


def discover(root: Path, packages: tuple[str, ...]) -> dict[str, Module]:
    """Parse every ``.py`` file of ``packages`` under ``root`` into a :class:`Module`."""
    modules: dict[str, Module] = {}
    for package in packages:
        base = root / package
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            name = ".".join(parts)
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            modules[name] = Module(name, path, tree, is_package)
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve_relative(module: Module, level: int, name: str | None) -> str:
    package = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
    if level > 1:
        package = package[: len(package) - (level - 1)]
    return ".".join([*package, name] if name else package)


def collect_imports(module: Module, known: set[str]) -> list[Import]:
    """Every import of ``module``, with relative imports resolved and submodules named.

    ``from pkg import name`` counts as importing ``pkg`` and, where ``pkg.name`` is a
    module in ``known``, that submodule too.
    """
    found: list[Import] = []

    def visit(node: ast.AST, kind: str) -> None:
        for child in ast.iter_child_nodes(node):
            child_kind = kind
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                child_kind = "lazy"
            if isinstance(child, ast.If) and _is_type_checking(child.test) and kind == "module":
                for stmt in child.body:
                    record(stmt, "typing")
                    visit(stmt, "typing")
                for stmt in child.orelse:
                    record(stmt, kind)
                    visit(stmt, kind)
                continue
            record(child, child_kind)
            visit(child, child_kind)

    def record(node: ast.AST, kind: str) -> None:
        text = ast.unparse(node) if isinstance(node, (ast.Import, ast.ImportFrom)) else ""
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append(Import(module.name, module.path, line, alias.name, kind, text))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _resolve_relative(module, node.level, node.module)
            else:
                base = node.module or ""
            if base == "__future__":
                return
            found.append(Import(module.name, module.path, line, base, kind, text))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in known:
                    found.append(Import(module.name, module.path, line, sub, kind, text))

    visit(module.tree, "module")
    return found


def layer_of(name: str) -> str | None:
    """The layer a module name belongs to; ``None`` for anything outside the project."""
    parts = name.split(".")
    if parts[0] == TRAINING:
        return "training"
    if parts[0] != LIBRARY:
        return None
    if len(parts) == 1:
        return None  # the root package: lazy re-exports only
    if ".".join(parts[:2]) in BASE_MODULES:
        return "base"
    if parts[1] not in LAYER_RANK:
        return None
    return parts[1]


def _within(target: str, prefix: str) -> bool:
    return target == prefix or target.startswith(prefix + ".")


def check(root: Path) -> list[str]:
    """All layering violations under ``root``, one readable line each."""
    modules = discover(root, (LIBRARY, TRAINING))
    known = set(modules)
    problems: list[str] = []
    graph: dict[str, dict[str, Import]] = {}

    for module in modules.values():
        if module.name == LIBRARY:
            continue  # effreason_agents/__init__.py may import anything lazily
        src_layer = layer_of(module.name)
        if src_layer is None:
            problems.append(
                f"{module.path.relative_to(root)}: module {module.name} is in no layer; "
                f"add its package to LAYER_RANK in tests/unit/test_layers.py or move it into one"
            )
            continue
        for imp in collect_imports(module, known):
            where = imp.where(root)
            top = imp.target.split(".")[0]
            dst_layer = layer_of(imp.target)

            if src_layer == "core" and top in CORE_FORBIDDEN_TOP_LEVEL:
                problems.append(
                    f"{where}: core must stay pure and may not import the I/O or client "
                    f"library {top!r}; move this code to adapters/ or engine/"
                )

            if dst_layer is None:
                continue

            if src_layer == "base":
                allowed = BASE_ALLOWED[module.name][imp.kind]
                if not any(_within(imp.target, prefix) for prefix in allowed):
                    problems.append(
                        f"{where}: {module.name} is a base module and may import only "
                        f"{list(allowed) or 'nothing from the package'} ({imp.kind} imports); "
                        f"it imports {imp.target}"
                    )
                continue

            if dst_layer == "training" and src_layer != "training":
                if src_layer not in TRAINING_LAZY_IMPORTERS:
                    problems.append(
                        f"{where}: the library never imports training code "
                        f"({TRAINING}); move what {module.name} needs into the library"
                    )
                elif imp.kind != "lazy":
                    problems.append(
                        f"{where}: cli may import {TRAINING} only lazily inside a command "
                        f"function, not at module level"
                    )
                continue

            if dst_layer == "cli" and src_layer not in CLI_IMPORTERS:
                problems.append(
                    f"{where}: nothing but effreason_agents/cli imports effreason_agents.cli; "
                    f"call the library function the command uses instead"
                )
                continue

            if dst_layer == "evaluation" and src_layer not in EVALUATION_IMPORTERS:
                problems.append(
                    f"{where}: run-time code never imports effreason_agents.evaluation "
                    f"(only {', '.join(EVALUATION_IMPORTERS)} may); move the shared code down"
                )
                continue

            if LAYER_RANK[dst_layer] > LAYER_RANK[src_layer]:
                problems.append(
                    f"{where}: layer {src_layer} may not import the higher layer "
                    f"{dst_layer} ({imp.target}); imports point down only"
                )

            if imp.kind == "module" and imp.target in known and imp.target != module.name:
                graph.setdefault(module.name, {}).setdefault(imp.target, imp)

    for cycle in find_cycles(graph):
        steps = [graph[a][b].where(root) for a, b in zip(cycle, cycle[1:])]
        problems.append(
            "import cycle (module-level imports): "
            + " -> ".join(cycle)
            + "\n    "
            + "\n    ".join(steps)
            + "\n    break it by moving shared code down a layer or importing lazily"
        )

    problems.extend(check_all(root, modules))
    # One statement can name a package and its submodule (`from pkg import sub`): report once.
    return list(dict.fromkeys(problems))


def find_cycles(graph: dict[str, dict[str, Import]]) -> list[list[str]]:
    """One cycle path (first node repeated at the end) per strongly connected component."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0

    def strongconnect(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, {})):
            if nxt not in index:
                strongconnect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            strongconnect(node)

    cycles = []
    for component in components:
        members = set(component)
        start = min(component)
        # Breadth-first search for the shortest path from start back to start.
        previous: dict[str, str] = {}
        frontier = [start]
        found = None
        while frontier and found is None:
            next_frontier = []
            for node in frontier:
                for nxt in sorted(graph.get(node, {})):
                    if nxt not in members:
                        continue
                    if nxt == start:
                        found = node
                        break
                    if nxt not in previous:
                        previous[nxt] = node
                        next_frontier.append(nxt)
                if found is not None:
                    break
            frontier = next_frontier
        path = [start]
        node = found
        while node is not None and node != start:
            path.append(node)
            node = previous[node]
        cycles.append([start, *reversed(path[1:]), start])
    return cycles


def _bound_names(tree: ast.Module) -> set[str]:
    """Names bound at module level (including inside module-level if/try/with/for blocks)."""
    names: set[str] = set()

    def targets(node: ast.AST) -> None:
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, (ast.Tuple, ast.List)):
            for elt in node.elts:
                targets(elt)
        elif isinstance(node, ast.Starred):
            targets(node.value)

    def walk(body: list[ast.stmt]) -> None:
        for stmt in body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(stmt.name)
            elif isinstance(stmt, ast.Assign):
                for target in stmt.targets:
                    targets(target)
            elif isinstance(stmt, (ast.AnnAssign, ast.AugAssign)):
                targets(stmt.target)
            elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
                if isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__":
                    continue
                for alias in stmt.names:
                    names.add(alias.asname or alias.name.split(".")[0])
            elif isinstance(stmt, (ast.For, ast.AsyncFor)):
                targets(stmt.target)
                walk(stmt.body)
                walk(stmt.orelse)
            elif isinstance(stmt, (ast.With, ast.AsyncWith)):
                for item in stmt.items:
                    if item.optional_vars is not None:
                        targets(item.optional_vars)
                walk(stmt.body)
            elif isinstance(stmt, (ast.If, ast.While)):
                walk(stmt.body)
                walk(stmt.orelse)
            elif isinstance(stmt, ast.Try):
                walk(stmt.body)
                for handler in stmt.handlers:
                    walk(handler.body)
                walk(stmt.orelse)
                walk(stmt.finalbody)
    walk(tree.body)
    return names


def _declared_all(tree: ast.Module) -> tuple[int, list[str]] | None:
    """(line, names) of the module's ``__all__``, or ``None`` when it declares none."""
    line = 0
    declared: list[str] | None = None
    for stmt in tree.body:
        value = None
        if isinstance(stmt, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in stmt.targets
        ):
            value, declared, line = stmt.value, [], stmt.lineno
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            if stmt.target.id == "__all__" and stmt.value is not None:
                value, declared, line = stmt.value, [], stmt.lineno
        elif isinstance(stmt, ast.AugAssign) and isinstance(stmt.target, ast.Name):
            if stmt.target.id == "__all__":
                value = stmt.value
        if value is not None and declared is not None:
            if isinstance(value, (ast.List, ast.Tuple)):
                declared.extend(
                    elt.value
                    for elt in value.elts
                    if isinstance(elt, ast.Constant) and isinstance(elt.value, str)
                )
    return None if declared is None else (line, declared)


def check_all(root: Path, modules: dict[str, Module]) -> list[str]:
    """Every module declares ``__all__``, and every name in it exists in the module.

    Exempt: ``__main__.py``, and ``__init__.py`` files that bind no public name.
    """
    problems: list[str] = []
    for module in modules.values():
        rel = module.path.relative_to(root)
        if module.path.name == "__main__.py":
            continue
        bound = _bound_names(module.tree)
        public = {n for n in bound if not n.startswith("_")}
        declared = _declared_all(module.tree)
        if declared is None:
            if module.is_package and not public:
                continue
            problems.append(
                f"{rel}:1: module {module.name} declares no __all__; list the public names "
                f"it defines (after the imports)"
            )
            continue
        line, names = declared
        for name in names:
            if name not in bound:
                problems.append(
                    f"{rel}:{line}: __all__ of {module.name} names {name!r}, which the module "
                    f"neither defines nor imports"
                )
    return problems


def test_package_layers_and_all() -> None:
    problems = check(REPO)
    assert not problems, (
        f"{len(problems)} layering / __all__ violation(s) (see DESIGN.md, 'Layers'):\n"
        + "\n".join(problems)
    )


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, source in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source), encoding="utf-8")


def test_checker_reports_violations(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "effreason_agents/__init__.py": "",
            "effreason_agents/errors.py": "__all__ = ['E']\nclass E(Exception): ...\n",
            "effreason_agents/core/__init__.py": "",
            "effreason_agents/core/store.py": """
                import sqlite3
                from urllib.parse import quote
                __all__ = ['open_db']
                def open_db(): return sqlite3.connect(':memory:')
            """,
            "effreason_agents/core/a.py": """
                from effreason_agents.core import b
                __all__ = ['x', 'missing']
                x = 1
            """,
            "effreason_agents/core/b.py": """
                from . import a
                __all__ = ['y']
                y = 2
            """,
            "effreason_agents/core/lazy.py": """
                __all__ = ['f']
                def f():
                    from effreason_agents.graph import g
                    return g
            """,
            "effreason_agents/core/noall.py": "VALUE = 1\n",
            "effreason_agents/graph/__init__.py": "__all__ = ['g']\ng = 1\n",
            "effreason_agents/engine/__init__.py": "",
            "effreason_agents/engine/run.py": """
                from effreason_agents.evaluation import metrics
                import router_training.train
                __all__ = []
            """,
            "effreason_agents/evaluation/__init__.py": "",
            "effreason_agents/evaluation/metrics.py": "__all__ = []\n",
            "effreason_agents/cli/__init__.py": "",
            "effreason_agents/cli/router.py": """
                import router_training.train
                __all__ = ['cmd']
                def cmd():
                    import router_training.train as ok
                    return ok
            """,
            "effreason_agents/langchain/__init__.py": "",
            "effreason_agents/langchain/m.py": """
                from effreason_agents.cli import router
                __all__ = []
            """,
            "router_training/__init__.py": "",
            "router_training/train.py": """
                from effreason_agents.evaluation import metrics
                __all__ = []
            """,
        },
    )
    problems = check(tmp_path)
    text = "\n".join(problems)

    assert "effreason_agents/core/store.py:2: `import sqlite3`" in text
    assert "core must stay pure" in text
    assert "'urllib'" in text
    assert any(
        p.startswith("import cycle") and "effreason_agents.core.a -> effreason_agents.core.b -> effreason_agents.core.a" in p
        for p in problems
    ), text
    assert "effreason_agents/core/lazy.py:4" in text and "higher layer graph" in text
    assert "effreason_agents/core/noall.py:1: module effreason_agents.core.noall declares no __all__" in text
    assert "names 'missing'" in text
    assert "effreason_agents/engine/run.py:2" in text and "never imports effreason_agents.evaluation" in text
    assert "effreason_agents/engine/run.py:3" in text and "never imports training code" in text
    assert "effreason_agents/cli/router.py:2" in text and "only lazily" in text
    assert "effreason_agents/cli/router.py:6" not in text  # the lazy import is allowed
    assert "effreason_agents/langchain/m.py:2" in text and "imports effreason_agents.cli" in text
    assert "router_training/train.py" not in text  # training may import evaluation
    assert len(problems) == 10, text


def test_checker_accepts_a_clean_package(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "effreason_agents/__init__.py": "",
            "effreason_agents/errors.py": "__all__ = ['E']\nclass E(Exception): ...\n",
            "effreason_agents/config.py": "from effreason_agents.errors import E\n__all__ = ['E']\n",
            "effreason_agents/core/__init__.py": "",
            "effreason_agents/core/money.py": "from decimal import Decimal\n__all__ = ['Decimal']\n",
            "effreason_agents/adapters/__init__.py": "",
            "effreason_agents/adapters/db.py": (
                "import sqlite3\nfrom effreason_agents.core.money import Decimal\n__all__ = ['sqlite3']\n"
            ),
        },
    )
    assert check(tmp_path) == []

