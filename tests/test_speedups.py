"""ourvidz.speedups: the exact switches, and the lossy step cache (Wan only) around compiled blocks."""

import numpy as np
import pytest
import torch
from conftest import run

from ourvidz import speedups
from ourvidz.families.base import GenerationRequest
from ourvidz.families.wan import speedups as wan_speedups
from ourvidz.model_cache import ModelCache
from ourvidz.speedups import SWITCHES, Speedups


def test_speedup_switches():
    assert not any(getattr(Speedups.off(), s) for s in SWITCHES)
    cpu = Speedups.for_device(torch.device("cpu"))
    assert cpu.batch_cfg and not cpu.compile  # compiling tiny CPU models costs more than it saves


def test_step_cache_refused_for_sdxl():
    result = run("generate", "sdxl_image_fast", "x", "--demo", "--step-cache", "0.1")
    assert result.exit_code == 2 and "wan family only" in result.stderr


@pytest.mark.slow
def test_step_cache_wraps_compiled_blocks(monkeypatch):
    """On the GPU the Wan blocks are compiled before a step cache may be switched on; the cache's
    hooks must run around the compiled blocks (dynamo's eager backend stands in for inductor)."""
    torch._dynamo.reset()
    monkeypatch.setitem(speedups.COMPILE_OPTIONS, "backend", "eager")
    model, _ = ModelCache(demo=True, device="cpu", speedups=Speedups.off()).get("wan")
    req = GenerationRequest(prompt="a lighthouse", negative_prompt="blurry", width=32, height=32, steps=6,
                            guidance=5.0, seeds=[7], flow_shift=3.0)
    eager = np.asarray(model.generate(req).images[0])
    assert wan_speedups.SWITCHES["compile"](model)
    compiled = np.asarray(model.generate(req).images[0])
    assert np.abs(compiled.astype(int) - eager.astype(int)).max() <= 1
    speedups.set_step_cache(model, 0.9)  # a high threshold: most steps reuse the cached residual
    cached = np.asarray(model.generate(req).images[0])
    speedups.set_step_cache(model, None)
    assert not np.array_equal(cached, compiled)  # the cache skipped work
    assert np.array_equal(np.asarray(model.generate(req).images[0]), compiled)  # and is gone when off
