"""The model cache: loaded families stay resident between jobs of a process.

The seed document's plan ("pre-load models, keep them in memory, switch without reloading"),
shared by generate, enhance, batch and the queue worker. Families stay on the GPU while they fit
a memory budget (--vram-budget, default 90% of the card); past it the least recently used one
is moved to CPU memory when that memory is there (a move is seconds, a cold load much more) and
freed otherwise.
"""

from __future__ import annotations

import gc
import os
import time
from collections import OrderedDict
from typing import Any

import torch

from ourvidz import families
from ourvidz.errors import OurvidzError, OutOfMemory, WeightsError, one_line
from ourvidz.families.base import default_dtype, pin_cpu_threads, resolve_device, sync
from ourvidz.families.weights import ModelSource, models_file_path, resolve_sources, weight_files
from ourvidz.progress import phase, within

GB = 1e9


def available_host_memory() -> int:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 0


class ModelCache:
    def __init__(self, models_file=None, demo: bool = False, device: str | None = None,
                 vram_budget_gb: float | None = None, offload_to_cpu: bool = True, random_weights: bool = False,
                 speedups=None, step_cache: float | None = None):
        self.models_file = models_file
        # Random full-size weights (speed tests) stand in for every family, as the demo models do.
        self.sources = resolve_sources(models_file, demo or random_weights)  # a malformed file fails here
        self.random_weights = random_weights
        self.device = resolve_device(device)
        if self.device.type == "cuda":
            from ourvidz.warmup import start_cuda

            start_cuda(str(self.device))  # on a thread, while diffusers imports and the weights are read
        self.dtype = default_dtype(self.device)
        self.threads = pin_cpu_threads(self.device)  # steady CPU runs (see pin_cpu_threads)
        self.offload_to_cpu = offload_to_cpu
        from ourvidz.speedups import Speedups

        self.speedups = speedups if speedups is not None else Speedups.for_device(self.device)
        self.step_cache = step_cache  # lossy, opt-in: the first-block cache threshold for Wan
        if vram_budget_gb is not None:
            self.budget = int(vram_budget_gb * GB)
        elif self.device.type == "cuda":
            self.budget = int(0.9 * torch.cuda.get_device_properties(self.device).total_memory)
        else:
            self.budget = None  # on the CPU everything lives in host memory anyway
        self.resident: OrderedDict[str, Any] = OrderedDict()  # least recently used first
        self.stats: dict[str, dict[str, float]] = {}

    @property
    def demo(self) -> bool:
        return all(s.is_demo for s in self.sources.values())

    def source(self, family: str) -> ModelSource:
        if family not in self.sources:
            hub = families.get(family).hub_id
            raise WeightsError(f"no {family} weights configured in {models_file_path(self.models_file)}; add "
                               f"'{family}: {{path: {hub}}}' (or a folder) there and run `ourvidz models fetch "
                               f"{family}`, or use --demo")
        return self.sources[family]

    def is_demo(self, family: str) -> bool:
        return self.source(family).is_demo

    def _stat(self, family: str) -> dict[str, float]:
        return self.stats.setdefault(family, {"loads": 0, "load_seconds": 0.0, "reuses": 0, "avoided_seconds": 0.0,
                                              "moves": 0, "move_seconds": 0.0})

    def get(self, family: str):
        """(model, load times of this call). A resident model costs no load: its times are 0."""
        stat = self._stat(family)
        if family in self.resident:
            model = self.resident.pop(family)
            self.resident[family] = model
            stat["reuses"] += 1
            stat["avoided_seconds"] += sum(model.load_times.values())
            if model.device != self.device:
                self._make_room(model.nbytes(), keep=family)
                t0 = time.perf_counter()
                with within(family), phase("move from cpu", total=model.nbytes(), unit="B") as ph:
                    model.to(self.device)
                    sync(self.device)
                    ph.update(model.nbytes())
                dt = time.perf_counter() - t0
                stat["moves"] += 1
                stat["move_seconds"] += dt
                return model, {"move from cpu": dt}
            return model, {name: 0.0 for name in model.load_times}
        source = self.source(family)
        self._make_room(self._estimate(source), keep=family)
        spec = families.get(family)
        cls = self.loader_class(spec)
        try:
            with within(family):
                model = cls.load(source, self.device, self.dtype)
        except OurvidzError:
            raise
        except torch.OutOfMemoryError:
            self._free_memory()
            raise OutOfMemory(f"out of GPU memory loading {family} ({source.describe()}); free the GPU or lower "
                              "--vram-budget so other models are moved out first") from None
        except Exception as exc:
            raise WeightsError(f"cannot load {family} weights from {source.describe()}: {one_line(exc)}") from None
        if spec.speedups and (self.random_weights or not source.is_demo):
            # Not on the tiny demo models: compiling them costs more than it saves, and cuDNN
            # attention rejects their head size.
            from ourvidz.speedups import apply

            apply(model, self.speedups)
        if spec.step_cache and self.step_cache is not None:
            from ourvidz.speedups import set_step_cache

            set_step_cache(model, self.step_cache)
        self.resident[family] = model
        stat["loads"] += 1
        stat["load_seconds"] += sum(model.load_times.values())
        return model, dict(model.load_times)

    def loader_class(self, spec):
        """The class whose load() makes a family's model: its pipeline, or its random full-size build."""
        return spec.random_class() if self.random_weights else spec.pipeline_class()

    def _estimate(self, source: ModelSource) -> int:
        """Bytes a family will take on the device: its weight files' size (good to a factor of ~2)."""
        if source.is_demo or self.budget is None:
            return 0
        from pathlib import Path

        path = Path(source.path)
        if source.kind == "hub":  # its files in the local Hugging Face cache, if they are there
            from ourvidz.families.weights import local_dir

            try:
                path = local_dir(source.path, False, source.family)
            except WeightsError:
                return 0
        return sum(f.stat().st_size for f in weight_files(path))

    def _on_device(self) -> int:
        return sum(m.nbytes() for m in self.resident.values() if m.device == self.device)

    def _make_room(self, need: int, keep: str) -> None:
        if self.budget is None:
            return
        for family in list(self.resident):
            if self._on_device() + need <= self.budget:
                return
            if family == keep or self.resident[family].device != self.device:
                continue
            self.evict(family)

    def evict(self, family: str) -> None:
        model = self.resident[family]
        if self.offload_to_cpu and available_host_memory() > 1.2 * model.nbytes():
            model.to(torch.device("cpu"))
        else:
            del self.resident[family]
            del model
        self._free_memory()

    def _free_memory(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def clear(self) -> None:
        self.resident.clear()
        self._free_memory()
