import os
from pathlib import Path

import pytest
import torch

# Tiny models on a small shared machine: with 2 intra-op threads and any other busy process,
# OpenMP oversubscription made a 2-step SDXL run ~70x slower. One thread is fast and steady.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory, monkeypatch):
    # No user config leaks in; the demo-model cache is shared across the session (built once).
    cache = tmp_path_factory.getbasetemp() / "ourvidz-cache"
    monkeypatch.setenv("OURVIDZ_CACHE", os.environ.get("OURVIDZ_TEST_CACHE", str(cache)))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("OURVIDZ_MODELS", raising=False)
    monkeypatch.delenv("OURVIDZ_PRESETS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path_factory.getbasetemp() / "home"))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: over ~20 s (multi-rank runs on the CPU); -m 'not slow' skips them")
