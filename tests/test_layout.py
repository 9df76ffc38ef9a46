"""The architecture stays visible: the serving core never imports the offline tools or the bench.

The serving core is every module of app/ (its packages included: app/api, app/backends,
app/repository) but the entry point (cli.py, which dispatches to the offline commands lazily)
and the tools outside the core. Imports are read from the source (ast), so a
lazy import inside a function counts too."""

from __future__ import annotations

import ast
from pathlib import Path

APP = Path(__file__).resolve().parents[1] / "app"
OUTSIDE_CORE = ("app.offline", "app.bench", "app.ray_serve")
ENTRY_POINTS = {"cli.py"}


def core_modules() -> list[Path]:
    outside = {name.removeprefix("app.") for name in OUTSIDE_CORE}
    return sorted(
        p
        for p in APP.rglob("*.py")
        if p.relative_to(APP).parts[0] not in outside
        and p.relative_to(APP).as_posix() not in ENTRY_POINTS
    )


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_the_core_is_found() -> None:
    names = {p.relative_to(APP).as_posix() for p in core_modules()}
    assert {"service.py", "batching.py", "api/http/v2.py", "backends/onnxruntime.py"} <= names
    assert {"backends/torch/models.py", "repository/state.py", "api/grpc/service.py"} <= names
    assert not any(
        n.startswith(("offline/", "bench/", "ray_serve/")) or n == "cli.py" for n in names
    )


def test_serving_core_imports_no_offline_tool_or_bench() -> None:
    offenders = {
        f"{path.relative_to(APP)} imports {name}"
        for path in core_modules()
        for name in imported_modules(path)
        if name.startswith(OUTSIDE_CORE) or name in ("app.offline", "app.bench", "app.ray_serve")
    }
    assert not offenders, sorted(offenders)


def test_the_check_sees_a_lazy_import(tmp_path: Path) -> None:
    sample = tmp_path / "m.py"
    sample.write_text("def f():\n    from app.offline.export import export_model\n")
    assert "app.offline.export" in imported_modules(sample)
