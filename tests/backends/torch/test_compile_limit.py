"""torch.compile(dynamic=False) compiles one graph per batch size; dynamo keeps at most
`recompile_limit` (8) per code object and runs further shapes uncompiled, without a word.
compile_module makes room for every size the batcher forms (run on the CPU with a backend that
only counts what dynamo hands it: no C++ compiler, about a second)."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
import torch._dynamo.config as dynamo_config
from torch import nn

import app.backends.torch.models as models
from app.config import BatchingConfig

LIMIT = "recompile_limit" if hasattr(dynamo_config, "recompile_limit") else "cache_size_limit"


class Tiny(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().mean(dim=(1, 2, 3))


def run_sizes(module: nn.Module, sizes: list[int]) -> None:
    with torch.inference_mode():
        for n in sizes:
            module(torch.zeros((n, 2, 2, 3), dtype=torch.uint8))


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch):
    """dynamo's limits as torch ships them, a fresh cache, and a backend counting graphs."""
    torch._dynamo.reset()
    monkeypatch.setattr(models, "_compiled_graphs", 0)
    seen: list[int] = []

    def backend(gm, inputs):
        seen.append(int(inputs[0].shape[0]))
        return gm.forward

    with dynamo_config.patch({LIMIT: 8}):
        yield backend, seen
    torch._dynamo.reset()


def test_every_bucket_of_max_batch_256_stays_compiled(counting) -> None:
    backend, seen = counting
    sizes = BatchingConfig(max_batch_size=256).bucket_sizes()  # 1, 2, ..., 128, 256: nine shapes
    assert len(sizes) == 9
    run_sizes(torch.compile(Tiny(), dynamic=False, backend=backend), sizes)  # type: ignore[arg-type]  # compile keeps the module's call
    assert len(seen) == 8, "the default limit leaves one size uncompiled (the fault)"

    torch._dynamo.reset()
    seen.clear()
    module = models.compile_module(Tiny(), "default", len(sizes), backend=backend)
    run_sizes(module, sizes)
    assert sorted(seen) == sizes
    assert getattr(dynamo_config, LIMIT) == 9


def test_the_limit_grows_with_every_compiled_instance(counting) -> None:
    backend, seen = counting
    # seven shapes, two instances sharing one forward()
    sizes = BatchingConfig(max_batch_size=64).bucket_sizes()
    first = models.compile_module(Tiny(), "default", len(sizes), backend=backend)
    second = models.compile_module(Tiny(), "default", len(sizes), backend=backend)
    run_sizes(first, sizes)
    run_sizes(second, sizes)
    assert getattr(dynamo_config, LIMIT) == 14
    assert len(seen) in (7, 14)  # 7 when dynamo shares graphs across instances
    # every call of either instance now hits a compiled graph: nothing new is compiled
    before = len(seen)
    run_sizes(second, sizes)
    assert len(seen) == before
