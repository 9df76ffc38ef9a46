"""The architecture stays visible: these rules fail when an import breaks them.

Imports are read from the source (ast), so an import inside a function (a lazy import) counts
like any other: laziness changes when a dependency loads, not that it exists. Imports under
`if TYPE_CHECKING:` never run; they count for the layering rules (they still tie one layer's
types to another) and not for the cycle rule (they cannot make a cycle at run time).

The rules:

1. The serving core (every module of app/ but the entry point cli.py and the tools outside
   the core: app/offline, app/bench, app/ray_serve) imports none of those tools.
2. Only app.main (which builds the app) imports the adapters (app.api); and inside app/api,
   no adapter imports another: app/api/http and app/api/grpc each import only themselves,
   the V2 protocol (app/api/v2) and the shared modules at app/api/ (errors, recording,
   inputs); app/api/v2 and the shared modules import no adapter.
3. Backends import nothing above them: only app.backends and the foundation (app.config,
   app.errors, app.preprocess, and what preprocess itself uses: app.decode_limits,
   app.jpeg_structure); the foundation imports only the foundation. So nothing a backend
   loads reaches the batcher, the repository, the data plane or the adapters.
4. No import cycles: neither among the modules of app/ nor among its top-level parts
   (app.api, app.backends, app.batching, app.repository, ...).
5. app/ uses absolute imports (the generated gRPC messages excepted), so the rules above see
   every import.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

APP = Path(__file__).resolve().parents[1] / "app"
OUTSIDE_CORE = ("app.offline", "app.bench", "app.ray_serve")
ENTRY_POINTS = {"cli.py"}
GENERATED = "api/grpc/gen/"  # protoc's output (app/api/grpc/gen/generate.sh)
ADAPTERS = ("app.api.http", "app.api.grpc")
PROTOCOL = "app.api.v2"
FOUNDATION = (
    "app.config",
    "app.errors",
    "app.preprocess",
    "app.decode_limits",
    "app.jpeg_structure",
)


# ------------------------------------------------------------------------------ reading imports
def modules(root: Path = APP) -> dict[str, Path]:
    """Dotted name -> file of every module under `root` (an `app` folder)."""
    out: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = [root.name, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _under_type_checking(tree: ast.Module) -> set[int]:
    ids: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            ids.update(id(n) for n in ast.walk(node))
    return ids


def imported_modules(path: Path, *, runtime_only: bool = False) -> set[str]:
    """Every name an absolute import in `path` may refer to (the module, and module.name for
    `from module import name`), lazy ones included; `runtime_only` leaves out imports under
    `if TYPE_CHECKING:`."""
    tree = ast.parse(path.read_text(), str(path))
    skip = _under_type_checking(tree) if runtime_only else set()
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def imported_app_modules(path: Path, known: Iterable[str], **kwargs: bool) -> set[str]:
    """The modules of app/ that `path` imports: `from app.api.v2 import codec` is
    app.api.v2.codec, `from app.errors import InvalidInput` is app.errors."""
    known = set(known)
    names = imported_modules(path, **kwargs)
    out = set()
    for name in names:
        if name in known and not any(n.startswith(name + ".") and n in known for n in names):
            out.add(name)  # the deepest module named: a submodule if one was imported
        elif name not in known and name.rpartition(".")[0] in known:
            out.add(name.rpartition(".")[0])  # `from module import attribute`
    return out


def relative_imports(path: Path) -> list[int]:
    tree = ast.parse(path.read_text(), str(path))
    return [n.lineno for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level > 0]


def within(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


# ------------------------------------------------------------------------------ the rules
def core_modules(root: Path = APP) -> dict[str, Path]:
    outside = {name.removeprefix("app.") for name in OUTSIDE_CORE}
    return {
        name: path
        for name, path in modules(root).items()
        if path.relative_to(root).parts[0] not in outside
        and path.relative_to(root).as_posix() not in ENTRY_POINTS
    }


def tool_imports(root: Path = APP) -> list[str]:
    """Rule 1: the serving core importing an offline tool, the bench or the Ray deployment."""
    found = modules(root)
    return sorted(
        f"{name} imports {imported}"
        for name, path in core_modules(root).items()
        for imported in imported_app_modules(path, found)
        if within(imported, OUTSIDE_CORE)
    )


def adapter_imports(root: Path = APP) -> list[str]:
    """Rule 2: an adapter imported from outside app/api (but by app.main), or by another
    adapter, the V2 protocol or a shared module of app/api."""
    found = modules(root)
    offenders = []
    for name, path in found.items():
        if GENERATED in path.relative_to(root).as_posix():
            continue
        own = next((a for a in ADAPTERS if within(name, [a])), None)
        for imported in imported_app_modules(path, found):
            if not within(imported, ["app.api"]) or imported == "app.api":
                continue
            if not within(name, ["app.api"]):
                if name != "app.main":
                    offenders.append(f"{name} imports the adapter layer: {imported}")
            elif within(imported, ADAPTERS) and not within(imported, [own] if own else []):
                offenders.append(f"{name} imports another adapter: {imported}")
    return sorted(offenders)


def backend_imports(root: Path = APP) -> list[str]:
    """Rule 3: a backend importing above itself, or the foundation importing above itself."""
    found = modules(root)
    offenders = []
    for name, path in found.items():
        if within(name, ["app.backends"]):
            allowed: tuple[str, ...] = ("app.backends", *FOUNDATION)
        elif within(name, FOUNDATION):
            allowed = FOUNDATION
        else:
            continue
        offenders += [
            f"{name} imports {imported}, above it"
            for imported in imported_app_modules(path, found)
            if not within(imported, allowed)
        ]
    return sorted(offenders)


def import_graph(root: Path = APP, *, parts: bool = False) -> dict[str, set[str]]:
    """Module -> the modules of app/ it imports at run time (lazily or not); with `parts`,
    app.<part> -> the other top-level parts it imports."""
    found = modules(root)
    graph: dict[str, set[str]] = {}
    for name, path in found.items():
        if GENERATED in path.relative_to(root).as_posix():
            continue
        edges = imported_app_modules(path, found, runtime_only=True) - {name}
        if parts:
            node = ".".join(name.split(".")[:2])
            edges = {".".join(e.split(".")[:2]) for e in edges} - {node, root.name}
            graph.setdefault(node, set()).update(edges)
        else:
            graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


# ------------------------------------------------------------------------------ the tests
def test_the_core_is_found() -> None:
    names = {p.relative_to(APP).as_posix() for p in core_modules().values()}
    assert {"service.py", "batching.py", "api/http/v2.py", "backends/onnxruntime.py"} <= names
    assert {"backends/torch/models.py", "repository/state.py", "api/grpc/service.py"} <= names
    assert {"api/v2/handler.py", "api/errors.py"} <= names
    assert not any(
        n.startswith(("offline/", "bench/", "ray_serve/")) or n == "cli.py" for n in names
    )


def test_serving_core_imports_no_offline_tool_or_bench() -> None:
    assert not tool_imports()


def test_no_adapter_imports_another_and_only_main_imports_adapters() -> None:
    assert not adapter_imports()


def test_backends_import_nothing_above_them() -> None:
    assert not backend_imports()


def test_no_import_cycles() -> None:
    assert not cycles(import_graph())
    assert not cycles(import_graph(parts=True))
    assert "app.batching" in import_graph(parts=True)  # the parts graph is not empty


def test_app_uses_absolute_imports() -> None:
    relative = {
        name: lines
        for name, path in modules().items()
        if GENERATED not in path.relative_to(APP).as_posix() and (lines := relative_imports(path))
    }
    assert not relative, relative


# ------------------------------------------------------------------------------ each rule can fail
def make_app(tmp_path: Path, files: dict[str, str]) -> Path:
    """A synthetic app/ tree: relative path -> source (packages get their __init__.py)."""
    root = tmp_path / "app"
    for rel, source in {"__init__.py": "", **files}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in path.relative_to(root).parents:
            (root / parent / "__init__.py").touch()
        path.write_text(source)
    return root


def test_the_check_sees_a_lazy_import(tmp_path: Path) -> None:
    sample = tmp_path / "m.py"
    sample.write_text("def f():\n    from app.offline.export import export_model\n")
    assert "app.offline.export" in imported_modules(sample)
    root = make_app(tmp_path, {"service.py": sample.read_text(), "offline/export.py": ""})
    assert tool_imports(root) == ["app.service imports app.offline.export"]


def test_adapter_rule_can_fail(tmp_path: Path) -> None:
    root = make_app(
        tmp_path,
        {
            "api/errors.py": "",
            "api/http/v2.py": "from app.api import errors\nfrom app.api.v2 import codec\n",
            "api/v2/codec.py": "",
            "api/grpc/service.py": "def f():\n    from app.api.http.v2 import resolve\n",
            "api/v2/handler.py": "from app.api.grpc import service\n",
            "service.py": "from app.api.errors import STATUS\n",
            "main.py": "from app.api import http\n",
        },
    )
    assert adapter_imports(root) == [
        "app.api.grpc.service imports another adapter: app.api.http.v2",
        "app.api.v2.handler imports another adapter: app.api.grpc.service",
        "app.service imports the adapter layer: app.api.errors",
    ]


def test_backend_rule_can_fail(tmp_path: Path) -> None:
    root = make_app(
        tmp_path,
        {
            "backends/base.py": "from app.config import ModelConfig\nfrom app.errors import E\n",
            "backends/fast.py": "from app.backends.base import B\nfrom app.batching import b\n",
            "backends/lazy.py": "def f():\n    from app.repository import ServedModel\n",
            "preprocess.py": "from app.metrics import M\n",
            "batching.py": "",
            "repository.py": "",
            "metrics.py": "",
            "config.py": "",
            "errors.py": "",
        },
    )
    assert backend_imports(root) == [
        "app.backends.fast imports app.batching, above it",
        "app.backends.lazy imports app.repository, above it",
        "app.preprocess imports app.metrics, above it",
    ]


def test_cycle_rule_can_fail(tmp_path: Path) -> None:
    root = make_app(
        tmp_path,
        {
            "config.py": "def f():\n    from app.model_folders import scan\n",  # lazy: counts
            "model_folders.py": "from app.config import ModelConfig\n",
            "service.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from app.main import App\n"  # never runs: no cycle
            ),
            "main.py": "from app.service import DataPlane\n",
            "backends/openvino.py": "from app.batching import bucket_sizes\n",
            "batching.py": "from app.backends.base import Backend\n",
            "backends/base.py": "",
        },
    )
    assert cycles(import_graph(root)) == [["app.config", "app.model_folders"]]
    assert cycles(import_graph(root, parts=True)) == [
        ["app.backends", "app.batching"],
        ["app.config", "app.model_folders"],
    ]


def test_absolute_import_rule_can_fail(tmp_path: Path) -> None:
    root = make_app(tmp_path, {"service.py": "import os\nfrom . import errors\n"})
    assert relative_imports(root / "service.py") == [2]
