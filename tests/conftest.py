import os
from pathlib import Path

import pytest

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
