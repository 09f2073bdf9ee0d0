"""The model cache (ourvidz.model_cache): families stay resident between jobs, within a memory
budget; past it the least recently used one moves to CPU memory or is freed. Fake families of
known sizes stand in for the real ones, except in the last test (the demo Qwen enhancer)."""

import pytest
import torch

from ourvidz import model_cache
from ourvidz.families.qwen.enhancer import QwenEnhancer
from ourvidz.model_cache import ModelCache


def fake_family(family: str, nbytes: int, load_seconds: float, log: list):
    class Fake:
        @classmethod
        def load(cls, source, device, dtype):
            log.append(("load", family))
            return cls(device)

        def __init__(self, device):
            self.family, self.device = family, device
            self.load_times = {"weights": load_seconds}
            self.identity = {"kind": "fake", "family": family}

        def nbytes(self):
            return nbytes

        def to(self, device):
            log.append(("to " + device.type, family))
            self.device = device

    return Fake


SIZES = {"qwen": int(0.6e9), "wan": int(0.3e9), "sdxl": int(0.3e9)}


@pytest.fixture
def weights_file(tmp_path):
    """A models file whose folders hold (sparse) safetensors files of the SIZES: _estimate reads sizes."""
    lines = []
    for family, size in SIZES.items():
        folder = tmp_path / family
        folder.mkdir()
        with open(folder / "model.safetensors", "wb") as f:
            f.truncate(size)
        lines.append(f"{family}: {{path: {folder}}}")
    path = tmp_path / "models.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def fake_cache(weights_file, budget_gb, log, **kw):
    fakes = {f: fake_family(f, SIZES[f], {"qwen": 40.0, "wan": 20.0, "sdxl": 10.0}[f], log) for f in SIZES}

    class FakeCache(ModelCache):
        def loader_class(self, spec):
            return fakes[spec.name]

    return FakeCache(models_file=weights_file, vram_budget_gb=budget_gb, **kw)


def test_estimate_reads_weight_file_sizes(weights_file):
    cache = fake_cache(weights_file, 1.0, [])
    assert {f: cache._estimate(cache.source(f)) for f in SIZES} == SIZES


def test_estimate_of_a_hub_id_uses_the_local_hf_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants

    snapshot = tmp_path / "hub" / "models--Qwen--Qwen2.5-7B" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("a" * 40)
    with open(snapshot / "model-00001-of-00002.safetensors", "wb") as f:
        f.truncate(1234)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    models = tmp_path / "models.yaml"
    models.write_text("qwen: {path: Qwen/Qwen2.5-7B}\nwan: {path: Wan-AI/Wan2.1-T2V-1.3B-Diffusers}\n")
    cache = ModelCache(models_file=models, vram_budget_gb=1.0)
    assert cache.source("qwen").kind == "hub"
    assert cache._estimate(cache.source("qwen")) == 1234
    assert cache._estimate(cache.source("wan")) == 0  # not in the cache: no estimate, no error


def test_both_fit_qwen_stays_and_a_second_get_costs_nothing(weights_file):
    log = []
    cache = fake_cache(weights_file, 1.0, log)  # qwen 0.6 + wan 0.3 GB fit 1.0 GB
    assert cache.get("qwen")[1] == {"weights": 40.0}
    assert cache.get("wan")[1] == {"weights": 20.0}
    for family in ("qwen", "wan", "qwen"):
        model, times = cache.get(family)
        assert times == {"weights": 0.0}
    assert log == [("load", "qwen"), ("load", "wan")]
    assert list(cache.resident) == ["wan", "qwen"]  # least recently used first
    assert cache.stats["qwen"]["reuses"] == 2 and cache.stats["qwen"]["avoided_seconds"] == 80.0


def test_over_budget_frees_the_least_recently_used(weights_file):
    log = []
    cache = fake_cache(weights_file, 0.8, log, offload_to_cpu=False)  # 0.6 + 0.3 > 0.8
    cache.get("qwen")
    cache.get("wan")  # qwen is freed first
    assert list(cache.resident) == ["wan"] and log == [("load", "qwen"), ("load", "wan")]
    assert cache.get("qwen")[1] == {"weights": 40.0}  # a cold load again
    assert list(cache.resident) == ["qwen"] and cache.stats["qwen"]["loads"] == 2


def test_over_budget_on_an_accelerator_moves_to_cpu_in_lru_order(weights_file, monkeypatch):
    # "meta" stands in for the GPU: a device that is not the CPU, with no CUDA calls behind it.
    monkeypatch.setattr(model_cache, "available_host_memory", lambda: 10**12)
    log = []
    cache = fake_cache(weights_file, 0.95, log, device=torch.device("meta"))  # room for qwen + one 0.3 GB model
    cache.get("qwen")
    cache.get("wan")
    cache.get("qwen")  # touch: wan is now the least recently used
    cache.get("sdxl")
    assert log == [("load", "qwen"), ("load", "wan"), ("to cpu", "wan"), ("load", "sdxl")]
    assert cache.resident["wan"].device.type == "cpu" and cache.resident["qwen"].device.type == "meta"
    model, times = cache.get("wan")  # back from CPU memory: a move, not a load; qwen (now LRU) makes room
    assert list(times) == ["move from cpu"] and model.device.type == "meta"
    assert log[4:] == [("to cpu", "qwen"), ("to meta", "wan")]
    assert cache.stats["wan"]["loads"] == 1 and cache.stats["wan"]["moves"] == 1


def test_demo_enhancer_in_the_cache():
    cache = ModelCache(demo=True, device="cpu")
    first, times = cache.get("qwen")
    assert isinstance(first, QwenEnhancer) and set(times) == {"tokenizer", "model"} and times["model"] > 0
    again, times = cache.get("qwen")
    assert again is first and times == {"tokenizer": 0.0, "model": 0.0}
    assert first.nbytes() > 0 and first.identity["kind"] == "demo" and first.identity["files"] == 1
