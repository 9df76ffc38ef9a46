"""The model repository API in-process (fake backend, a real folder repository): index, load
and unload, reload of a changed folder, a failed load, versions, variants, model control."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

from app.config import Settings
from app.errors import InvalidInput
from app.main import create_app
from tests.conftest import app_client
from tests.fakes import Behaviour, FakeBackend, fake_config, write_fake_model

EXPLICIT = {"model_control": "explicit"}


def make_app(repo: Path, **settings: object):
    # type-ignore reason: Settings' fields are typed; the tests pass them as **object
    return create_app(Settings(models_dir=repo, **settings))  # type: ignore[arg-type]


def infer_body(grey: int, crop: int = 224) -> dict[str, object]:
    data = np.full((1, crop, crop, 3), grey, np.uint8)
    return {
        "inputs": [
            {
                "name": "images",
                "datatype": "UINT8",
                "shape": list(data.shape),
                "data": data.ravel().tolist(),
            }
        ],
        "outputs": [{"name": "probabilities", "parameters": {"classification": 1}}],
    }


def top_label(response) -> str:
    assert response.status_code == 200, response.text
    (row,) = response.json()["outputs"][0]["data"]
    return str(row).split(":")[2]


def write_version(folder: Path, version: int, **overrides: object) -> Path:
    directory = folder / str(version)
    directory.mkdir(parents=True, exist_ok=True)
    fake_config(folder.name, **overrides).write(directory)
    return directory


def labels(prefix: str) -> list[str]:
    return [f"{prefix}{i}" for i in range(256)]


async def test_control_none_keeps_index_and_refuses_load_and_unload(tmp_path: Path) -> None:
    write_fake_model(tmp_path, "fake")
    async with app_client(make_app(tmp_path)) as c:
        r = await c.post("/v2/repository/index")
        assert r.status_code == 200
        assert r.json() == [{"name": "fake", "version": "1", "state": "READY", "reason": ""}]
        for action in ("load", "unload"):
            r = await c.post(f"/v2/repository/models/fake/{action}")
            assert r.status_code == 403 and "RESNET_SERVE_MODEL_CONTROL" in r.json()["error"]
        assert "model_repository" in (await c.get("/v2")).json()["extensions"]
        assert (await c.post("/v2/models/fake/infer", json=infer_body(3))).status_code == 200


async def test_names_are_folders_never_paths(tmp_path: Path) -> None:
    write_fake_model(tmp_path / "models", "fake")
    (tmp_path / "outside").mkdir()
    fake_config("outside").write(tmp_path / "outside")
    async with app_client(make_app(tmp_path / "models", **EXPLICIT)) as c:
        for name in ("...", "a..b", ".hidden", "a%5Cb", "a%00b", "fake%5C..%5C..%5Coutside"):
            r = await c.post(f"/v2/repository/models/{name}/load")
            assert r.status_code == 400 and "not a model name" in r.json()["error"], name
        # what the HTTP client normalises away reaches the repository from gRPC as it is
        # type-ignore reason: httpx's ASGITransport is private API; reaching the app in-process
        repository = c._transport.app.state.repository  # type: ignore[attr-defined]
        for name in ("..", ".", "../outside", "a/b", "/etc", "fake/../../outside", "", "x\\y"):
            for call in (repository.load, repository.unload):
                with pytest.raises(InvalidInput):
                    await call(name)
        r = await c.post("/v2/repository/models/outside/load")
        assert r.status_code == 404 and "folders: fake" in r.json()["error"]
        r = await c.post("/v2/repository/models/..%2Foutside/load")
        assert r.status_code in (400, 404)
        r = await c.post("/v2/repository/models/fake/load", json={"parameters": {"config": "{}"}})
        assert r.status_code == 400 and "not supported" in r.json()["error"]
        r = await c.post(
            "/v2/repository/models/fake/load", json={"parameters": {"file:1/model.onnx": "AA=="}}
        )
        assert r.status_code == 400
        assert [e["name"] for e in (await c.post("/v2/repository/index")).json()] == ["fake"]


async def test_reload_switches_to_the_new_files_and_a_failed_load_keeps_the_old(
    tmp_path: Path,
) -> None:
    folder = write_fake_model(tmp_path, "fake", labels=labels("old"))
    async with app_client(make_app(tmp_path, **EXPLICIT)) as c:
        assert top_label(await c.post("/v2/models/fake/infer", json=infer_body(9))) == "old9"
        # unchanged folder: load is a no-op and the instances stay
        # type-ignore reason: httpx's ASGITransport is private API; reaching the app in-process
        app = c._transport.app  # type: ignore[attr-defined]
        backends = list(app.state.repository.get("fake").backends)
        assert (await c.post("/v2/repository/models/fake/load")).status_code == 200
        assert app.state.repository.get("fake").backends == backends
        # a new export into the same folder
        fake_config("fake", labels=labels("new")).write(folder)
        assert (await c.post("/v2/repository/models/fake/load")).status_code == 200
        assert top_label(await c.post("/v2/models/fake/infer", json=infer_body(9))) == "new9"
        assert app.state.repository.get("fake").backends != backends
        assert all(b not in app.state.repository.get("fake").backends for b in backends)
        # a corrupt config: the load says why, the new one keeps serving
        (folder / "config.json").write_text('{"name": "fake", "backend": ')
        r = await c.post("/v2/repository/models/fake/load")
        assert r.status_code == 400 and "invalid config.json" in r.json()["error"], r.text
        assert "keeps serving" in r.json()["error"]
        assert top_label(await c.post("/v2/models/fake/infer", json=infer_body(9))) == "new9"
        (entry,) = (await c.post("/v2/repository/index")).json()
        assert entry["state"] == "READY" and "invalid config.json" in entry["reason"]
        assert (await c.get("/health/ready")).status_code == 200
        # a config that validates but whose model cannot load: same
        fake_config("fake", labels=labels("x")).write(folder)
        FakeBackend.behaviour["fake"] = Behaviour(fail_load=True)
        r = await c.post("/v2/repository/models/fake/load")
        assert r.status_code == 400 and "fake load failure" in r.json()["error"]
        FakeBackend.behaviour["fake"] = Behaviour()
        assert top_label(await c.post("/v2/models/fake/infer", json=infer_body(9))) == "new9"
        # fixed: the next load serves it and clears the reason
        assert (await c.post("/v2/repository/models/fake/load")).status_code == 200
        assert top_label(await c.post("/v2/models/fake/infer", json=infer_body(9))) == "x9"
        (entry,) = (await c.post("/v2/repository/index")).json()
        assert entry == {"name": "fake", "version": "1", "state": "READY", "reason": ""}


async def test_unload_answers_in_flight_requests_then_404_and_load_brings_it_back(
    tmp_path: Path,
) -> None:
    write_fake_model(tmp_path, "slow", options={"delay_s": 1.0})
    write_fake_model(tmp_path, "other")
    async with app_client(make_app(tmp_path, **EXPLICIT)) as c:
        in_flight = [
            asyncio.create_task(c.post("/v2/models/slow/infer", json=infer_body(g)))
            for g in (1, 2, 3)
        ]
        # type-ignore reason: httpx's ASGITransport is private API; reaching the app in-process
        app = c._transport.app  # type: ignore[attr-defined]
        model = app.state.repository.get("slow")
        # the three are queued (or running) within a few ms in-process; each batch takes 1 s
        while model.batcher is None or not FakeBackend.behaviour.get("slow", Behaviour()).batches:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        unload = asyncio.create_task(c.post("/v2/repository/models/slow/unload"))
        await asyncio.sleep(0.1)
        states = {e["name"]: e["state"] for e in (await c.post("/v2/repository/index")).json()}
        assert states == {"other": "READY", "slow": "UNLOADING"}
        during = await c.post("/v2/models/slow/infer", json=infer_body(4))
        assert during.status_code == 503  # not accepting while it drains
        assert (await unload).status_code == 200
        assert [top_label(await t) for t in in_flight] == ["grey1", "grey2", "grey3"]
        assert (await c.post("/v2/models/slow/infer", json=infer_body(4))).status_code == 404
        assert (await c.get("/v2/models/slow")).status_code == 404
        assert (await c.get("/v1/models/slow")).status_code == 404
        index = (await c.post("/v2/repository/index")).json()
        assert {"name": "slow", "state": "UNAVAILABLE", "reason": "unloaded"} in index
        ready_only = (await c.post("/v2/repository/index", json={"ready": True})).json()
        assert [e["name"] for e in ready_only] == ["other"]
        assert (await c.post("/v2/repository/models/slow/unload")).status_code == 200  # no-op
        assert (await c.post("/v2/repository/models/slow/load")).status_code == 200
        assert top_label(await c.post("/v2/models/slow/infer", json=infer_body(5))) == "grey5"
        text = (await c.get("/metrics")).text
        assert 'resnet_serve_model_ready{model="slow"} 1.0' in text


async def test_versions_highest_by_default_or_as_the_policy_says(tmp_path: Path) -> None:
    folder = tmp_path / "fake"
    write_version(folder, 1, labels=labels("one"))
    async with app_client(make_app(tmp_path, **EXPLICIT)) as c:
        assert (await c.get("/v2/models/fake")).json()["versions"] == ["1"]
        write_version(folder, 2, labels=labels("two"))
        assert (await c.post("/v2/repository/models/fake/load")).status_code == 200
        assert top_label(await c.post("/v2/models/fake/infer", json=infer_body(7))) == "two7"
        r = await c.post("/v2/models/fake/versions/2/infer", json=infer_body(7))
        assert top_label(r) == "two7" and r.json()["model_version"] == "2"
        assert (
            await c.post("/v2/models/fake/versions/1/infer", json=infer_body(7))
        ).status_code == 404
        (folder / "config.json").write_text(json.dumps({"version_policy": {"all": {}}}))
        assert (await c.post("/v2/repository/models/fake/load")).status_code == 200
        assert (await c.get("/v2/models/fake")).json()["versions"] == ["1", "2"]
        for v, label in (("1", "one7"), ("2", "two7")):
            r = await c.post(f"/v2/models/fake/versions/{v}/infer", json=infer_body(7))
            assert top_label(r) == label
            assert (await c.get(f"/v2/models/fake/versions/{v}/ready")).status_code == 200
            assert (await c.get(f"/v2/models/fake/versions/{v}/config")).status_code == 200
        assert top_label(await c.post("/v2/models/fake/infer", json=infer_body(7))) == "two7"
        index = (await c.post("/v2/repository/index")).json()
        assert [(e["name"], e["version"], e["state"]) for e in index] == [
            ("fake", "1", "READY"),
            ("fake", "2", "READY"),
        ]
        (folder / "config.json").write_text(
            json.dumps({"version_policy": {"specific": {"versions": [1]}}})
        )
        assert (await c.post("/v2/repository/models/fake/load")).status_code == 200
        assert top_label(await c.post("/v2/models/fake/infer", json=infer_body(7))) == "one7"
        assert (await c.get("/v2/models/fake/versions/2")).status_code == 404
        (folder / "config.json").write_text(
            json.dumps({"version_policy": {"specific": {"versions": [3]}}})
        )
        r = await c.post("/v2/repository/models/fake/load")
        assert r.status_code == 400 and "[3]" in r.json()["error"]
        assert top_label(await c.post("/v2/models/fake/infer", json=infer_body(7))) == "one7"


async def test_variants_and_backend_copies_follow_their_folder(tmp_path: Path) -> None:
    folder = write_fake_model(
        tmp_path, "fake", labels=labels("a"), variants={"fake-two": {"batching": {"instances": 2}}}
    )
    async with app_client(make_app(tmp_path, **EXPLICIT)) as c:
        names = [e["name"] for e in (await c.post("/v2/repository/index")).json()]
        assert names == ["fake", "fake-two"]
        fake_config(
            "fake", labels=labels("b"), variants={"fake-two": {"batching": {"instances": 2}}}
        ).write(folder)
        # a variant's name stands for its folder: both reload
        assert (await c.post("/v2/repository/models/fake-two/load")).status_code == 200
        for name in ("fake", "fake-two"):
            r = await c.post(f"/v2/models/{name}/infer", json=infer_body(1))
            assert top_label(r) == "b1"
        # a variant dropped from the config stops being served by the next load
        fake_config("fake", labels=labels("c")).write(folder)
        assert (await c.post("/v2/repository/models/fake/load")).status_code == 200
        assert (await c.get("/v2/models/fake-two")).status_code == 404
        assert [e["name"] for e in (await c.post("/v2/repository/index")).json()] == ["fake"]
        assert (await c.post("/v2/repository/models/fake/unload")).status_code == 200
        assert (await c.get("/v2/models/fake")).status_code == 404


async def test_loading_a_new_folder_and_a_name_taken_by_another_folder(tmp_path: Path) -> None:
    write_fake_model(tmp_path, "fake")
    async with app_client(make_app(tmp_path, **EXPLICIT)) as c:
        write_fake_model(tmp_path, "late")
        index = (await c.post("/v2/repository/index")).json()
        assert {"name": "late", "state": "UNAVAILABLE", "reason": "unloaded"} in index
        assert (await c.get("/v2/models/late")).status_code == 404
        assert (await c.post("/v2/repository/models/late/load")).status_code == 200
        assert top_label(await c.post("/v2/models/late/infer", json=infer_body(2))) == "grey2"
        (tmp_path / "thief").mkdir()
        fake_config("fake").write(tmp_path / "thief")  # serves the name "fake" too
        r = await c.post("/v2/repository/models/thief/load")
        assert r.status_code == 400 and "another folder" in r.json()["error"]
        assert (await c.get("/health/ready")).status_code == 200


@pytest.mark.parametrize("workers", [2])
async def test_load_is_refused_with_several_workers(tmp_path: Path, workers: int) -> None:
    write_fake_model(tmp_path, "fake")
    async with app_client(make_app(tmp_path, workers=workers, **EXPLICIT)) as c:
        r = await c.post("/v2/repository/models/fake/load")
        assert r.status_code == 403 and "workers" in r.json()["error"]


async def test_repository_calls_need_the_token(tmp_path: Path) -> None:
    write_fake_model(tmp_path, "fake")
    app = make_app(tmp_path, auth_token="s3cret", **EXPLICIT)
    async with app_client(app) as c:
        for path in ("index", "models/fake/load", "models/fake/unload"):
            r = await c.post(f"/v2/repository/{path}")
            assert r.status_code == 401, path
        auth = {"Authorization": "Bearer s3cret"}
        assert (await c.post("/v2/repository/index", headers=auth)).status_code == 200
        assert (await c.post("/v2/repository/models/fake/load", headers=auth)).status_code == 200
        assert (await c.get("/v2/models/fake", headers=auth)).status_code == 200


async def test_bodies_nested_too_deep_are_a_400_as_on_every_json_route(tmp_path: Path) -> None:
    """30,000 levels fit the 64 KiB body limit and overflow Python's json parser: a clear 400
    (the server's JSON depth limit), never a 500, and the model is untouched."""
    write_fake_model(tmp_path, "fake")
    deep = b'{"ready": ' + b"[" * 30_000 + b"]" * 30_000 + b"}"
    shallow = b'{"parameters": ' + b"[" * 70 + b"]" * 70 + b"}"  # over the default 64 levels
    async with app_client(make_app(tmp_path, **EXPLICIT)) as c:
        for path in ("index", "models/fake/load", "models/fake/unload"):
            for body in (deep, shallow):
                r = await c.post(f"/v2/repository/{path}", content=body)
                assert r.status_code == 400, (path, r.text)
                assert "JSON" in r.json()["error"], path
        assert (await c.get("/v2/models/fake/ready")).status_code == 200
