"""The serve flags are made from Settings, and the README's settings table lists Settings."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from app.cli import FLAG_ALIASES, SECRET_SETTINGS, build_parser, serve_settings
from app.config import Settings

README = Path(__file__).resolve().parents[1] / "README.md"
PREFIX = "RESNET_SERVE_"


def serve_args(*argv: str):
    return build_parser().parse_args(["serve", *argv])


def test_every_setting_but_the_secrets_is_a_flag() -> None:
    parser = build_parser()
    serve = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    dests = {a.dest for a in serve.choices["serve"]._actions} - {"help"}
    assert dests == set(Settings.model_fields) - SECRET_SETTINGS
    assert all(Settings.model_fields[f].description for f in Settings.model_fields)


def test_flags_become_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(PREFIX + name.upper(), raising=False)
    settings = serve_settings(
        serve_args(
            "--models", "repo", "--max-body-bytes", "5", "--request-timeout-ms", "2.5",
            "--protect-metrics", "--backends", "eager,torchscript",
            "--model-control-mode", "explicit", "--backend-plugins", "x=pkg.mod:X",
            "--grpc-max-message-bytes", "7",
        )
    )  # fmt: skip
    assert settings.models_dir == Path("repo") and settings.max_body_bytes == 5
    assert settings.request_timeout_ms == 2.5 and settings.protect_metrics is True
    assert settings.backends == ["eager", "torchscript"] and settings.model_control == "explicit"
    assert settings.backend_plugins == {"x": "pkg.mod:X"} and settings.grpc_max_message_bytes == 7
    assert serve_settings(serve_args("--models-dir", "r2", "--no-protect-metrics")).models_dir == (
        Path("r2")
    )


def test_an_unset_flag_leaves_the_environment_in_charge(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESNET_SERVE_MAX_TOP_K", "7")
    monkeypatch.setenv("RESNET_SERVE_WORKERS", "3")
    settings = serve_settings(serve_args("--workers", "2"))
    assert settings.max_top_k == 7 and settings.workers == 2
    assert set(FLAG_ALIASES) <= set(Settings.model_fields)


def readme_settings(text: str) -> dict[str, str]:
    """RESNET_SERVE_* name -> its default cell, from the README's Configuration table."""
    table = text[text.index("## Configuration") :]
    rows: dict[str, str] = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith(f"`{PREFIX}"):
            if rows and not line.startswith("|"):
                break  # the table ended
            continue
        names = [n.strip().strip("`") for n in cells[0].split(" / ")]
        defaults = [d.strip() for d in cells[1].split(" / ")]
        if len(defaults) != len(names):
            defaults = [cells[1]] * len(names)
        rows.update(zip(names, defaults, strict=True))
    return rows


def rendered(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def table_errors(text: str) -> list[str]:
    """How the README's settings table differs from Settings (names, then defaults)."""
    rows = readme_settings(text)
    wanted = {PREFIX + f.upper() for f in Settings.model_fields}
    errors = [f"{n}: in the README, not in Settings" for n in sorted(set(rows) - wanted)]
    errors += [f"{n}: in Settings, not in the README" for n in sorted(wanted - set(rows))]
    for name, cell in rows.items():
        field = Settings.model_fields.get(name.removeprefix(PREFIX).lower())
        if field is None:
            continue
        default = field.get_default(call_default_factory=True)
        if default in (None, [], {}):
            if not (cell in ("(none)", "(off)") or re.fullmatch(r"`RESNET_SERVE_\w+`", cell)):
                errors.append(f"{name}: README default {cell!r}, Settings has none")
        elif re.split(r"[\s:(]", cell.strip("`"), maxsplit=1)[0].strip("`") != rendered(default):
            errors.append(f"{name}: README default {cell!r}, Settings {default!r}")
    return errors


def test_readme_settings_table_matches_settings() -> None:
    assert not table_errors(README.read_text())


def test_the_readme_check_can_fail() -> None:
    text = README.read_text()
    row = "| `RESNET_SERVE_MAX_TOP_K` | 100 | largest `top_k` (400) |"
    assert row in text, "the sample row moved: update this test"
    assert table_errors(text.replace(row, row.replace("| 100 |", "| 101 |"))) == [
        "RESNET_SERVE_MAX_TOP_K: README default '101', Settings 100"
    ]
    assert table_errors(text.replace(row + "\n", "")) == [
        "RESNET_SERVE_MAX_TOP_K: in Settings, not in the README"
    ]
    extra = row.replace("MAX_TOP_K", "MAX_TOP_Q")
    assert table_errors(text.replace(row, row + "\n" + extra)) == [
        "RESNET_SERVE_MAX_TOP_Q: in the README, not in Settings"
    ]
