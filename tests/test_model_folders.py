"""What a model folder serves: plain folders, version folders and Triton's version_policy,
variants per version, and names that can never be paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.errors import InvalidInput, ModelNotFound
from app.model_folders import fingerprint, list_folders, read_folder, resolve_folder, scan
from tests.fakes import fake_config


def version(folder: Path, v: int, **overrides: object) -> None:
    (folder / str(v)).mkdir(parents=True)
    fake_config(folder.name, **overrides).write(folder / str(v))


def served(folder: Path, extra: list[str] | None = None) -> list[tuple[str, str]]:
    return [
        (c.name, c.version) for c in read_folder(list_folders(folder.parent)[folder.name], extra)
    ]


def test_highest_version_by_default_and_each_policy(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    for v in (1, 2, 10):
        version(folder, v, version="99")  # the folder's number wins over the file's
    (folder / "notes").mkdir()  # not a version
    assert served(folder) == [("m", "10")]
    policies = {
        '{"version_policy": {"latest": {"num_versions": 2}}}': [("m", "2"), ("m", "10")],
        '{"version_policy": {"all": {}}}': [("m", "1"), ("m", "2"), ("m", "10")],
        '{"version_policy": {"specific": {"versions": [2, 1]}}}': [("m", "1"), ("m", "2")],
        "{}": [("m", "10")],
    }
    for text, expected in policies.items():
        (folder / "config.json").write_text(text)
        assert served(folder) == expected, text
    for text, why in {
        '{"version_policy": {"specific": {"versions": [3]}}}': "[3]",
        '{"version_policy": {"all": {}, "latest": {}}}': "set one",
        '{"version_policy": {"newest": {}}}': "newest",
        '{"name": "m", "backend": "fake"}': "name",  # a whole config beside version folders
        "{": "invalid config.json",
    }.items():
        (folder / "config.json").write_text(text)
        with pytest.raises(ValueError, match="^m: ") as err:
            served(folder)
        assert why in str(err.value), (text, str(err.value))


def test_variants_and_backend_copies_per_version(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    version(folder, 1, variants={"m-b": {"batching": {"max_batch_size": 2}}})
    version(folder, 2, variants={"m-b": {"batching": {"max_batch_size": 2}}})
    (folder / "config.json").write_text(json.dumps({"version_policy": {"all": {}}}))
    assert served(folder, ["onnxruntime"]) == [
        ("m", "1"),
        ("m-b", "1"),
        ("m-onnxruntime", "1"),
        ("m", "2"),
        ("m-b", "2"),
        ("m-onnxruntime", "2"),
    ]


def test_scan_refuses_a_name_served_twice(tmp_path: Path) -> None:
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        fake_config("same").write(tmp_path / d)
    with pytest.raises(ValueError, match="served twice: same"):
        scan(tmp_path)


def test_names_resolve_only_to_listed_folders(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    (repo / "m").mkdir(parents=True)
    fake_config("m", variants={"m-x": {}}).write(repo / "m")
    (repo / "empty").mkdir()  # no config: not a model folder
    (tmp_path / "secret").mkdir()
    fake_config("secret").write(tmp_path / "secret")
    assert list(list_folders(repo)) == ["m"]
    assert resolve_folder(repo, "m", {}).path == repo / "m"
    assert resolve_folder(repo, "m-x", {"m-x": "m"}).name == "m"
    for bad in ("..", "../secret", "m/..", "/tmp", "a\\b", ".m", "", "x" * 200, "a\0b"):
        with pytest.raises(InvalidInput):
            resolve_folder(repo, bad, {})
    for missing in ("secret", "empty", "nope"):
        with pytest.raises(ModelNotFound):
            resolve_folder(repo, missing, {"secret": "../secret"})
    with pytest.raises(ModelNotFound):
        resolve_folder(None, "m", {})


def test_fingerprint_sees_a_new_export_but_not_engine_caches(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    fake_config("m").write(folder)
    f = list_folders(tmp_path)["m"]
    before = fingerprint(f)
    (folder / "trt-cache").mkdir()
    (folder / "trt-cache" / "engine.bin").write_bytes(b"x")
    assert fingerprint(f) == before
    fake_config("m", labels=[str(i) for i in range(256)]).write(folder)
    assert fingerprint(f) != before


def test_scan_serves_several_versions_of_one_folder(tmp_path: Path) -> None:
    """A name repeated by the versions (and backend copies) of ONE folder is no clash: a server
    must start from a folder whose policy serves more than one version."""
    folder = tmp_path / "m"
    for v in (1, 2):
        version(folder, v)
    (folder / "config.json").write_text(json.dumps({"version_policy": {"all": {}}}))
    found = scan(tmp_path, ["onnxruntime"])
    assert [(c.name, c.version) for c in found["m"]] == [
        ("m", "1"),
        ("m-onnxruntime", "1"),
        ("m", "2"),
        ("m-onnxruntime", "2"),
    ]
