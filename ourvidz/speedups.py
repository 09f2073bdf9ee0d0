"""Exact speed-ups on the GPU, each a switch (the bench turns them off one by one for its
ablation table). "Exact" means the output equals the plain diffusers pipeline's within bf16
rounding; the bench checks it. Lossy speed-ups are not here: they are opt-in elsewhere.

Applied once to a resident model; compilation itself happens on the first call (the warm-up),
and a persistent inductor cache makes the next process's warm-up short.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

from ourvidz import families

# The order the bench adds them in for its cumulative ablation table. Measured on an H100
# (research/probe-results/h100-2026-11-25.md); left out because they did not pay there:
# channels_last without compile (slower), fused QKV (neutral), full-graph UNet compile (1.21x
# but ~107 s of compiling per batch shape), flash/efficient SDPA backends (slower than cuDNN).
# cuda_graph comes last: it captures whatever the earlier switches made of the call.
SWITCHES = ("batch_cfg", "vae_layout", "vae_padding", "attention_backend", "compile", "compile_resnets", "compile_vae",
            "cuda_graph")
# Exact and free of compiling, so on for the CPU's demo models too.
ANY_DEVICE = ("batch_cfg", "vae_padding")
from ourvidz.families.base import COMPILE_OPTIONS  # noqa: F401 - every compiled region: one graph per shape


@dataclass
class Speedups:
    batch_cfg: bool = True  # Wan one-frame jobs: both guidance branches in one batch-2 call
    vae_layout: bool = True  # Wan VAE: Conv3d weights in channels_last_3d, cuDNN autotuning on
    vae_padding: bool = True  # Wan VAE: spatial zero padding inside the convolution, not an F.pad copy
    attention_backend: bool = True  # Wan: cuDNN fused attention (diffusers' _native_cudnn) on Hopper
    compile: bool = True  # regional compile of the repeated blocks (SDXL UNet, Wan transformer)
    compile_resnets: bool = True  # SDXL: the UNet's ResNet blocks compiled too (GroupNorm+SiLU fused)
    compile_vae: bool = True  # SDXL VAE decoder compiled, channels_last
    # Wan one-frame jobs: the transformer call replayed from a CUDA graph per input signature (no
    # full-graph compile); they are launch-bound. Never on the CPU, under a step cache or context
    # parallelism; a capture that fails or differs in any bit falls back to eager, with a note.
    cuda_graph: bool = True
    compile_cache_dir: str | None = None  # persistent inductor cache (default ~/.cache/ourvidz/inductor)

    @classmethod
    def off(cls) -> Speedups:
        return cls(**{f.name: False for f in fields(cls) if f.name != "compile_cache_dir"})

    @classmethod
    def for_device(cls, device: torch.device, long_lived: bool = True) -> Speedups:
        """All of them for a process that runs many jobs (batch, worker, a prompt file). A one-job
        process skips compiling: on the H100 it cost 15-27 s of warm-up to save well under a
        second a job (BENCHMARKS.md), and cuDNN attention pays only compiled; CUDA graphs cost a
        capture (warm-up, capture, check: ~5 calls) per new shape, which one job barely repays. On
        the CPU (demo models) only the free ones."""
        if device.type == "cuda" and long_lived:
            return cls()
        free = ANY_DEVICE + ("vae_layout",) if device.type == "cuda" else ANY_DEVICE
        return cls(**{n: n in free for n in SWITCHES})

    def to_dict(self) -> dict:
        return asdict(self)


def enable_compile_cache(path: str | None = None) -> Path:
    """Inductor's FX-graph and autotune caches on disk: a new process reuses compiled kernels."""
    cache = Path(path or os.environ.get("OURVIDZ_CACHE", Path.home() / ".cache" / "ourvidz")) / "inductor"
    cache.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache))
    os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
    os.environ.setdefault("TORCHINDUCTOR_AUTOGRAD_CACHE", "1")
    return cache


def apply(model, s: Speedups, only: tuple[str, ...] = SWITCHES) -> list[str]:
    """Apply the switches that are on (among `only`) to a loaded generator family, once each, each
    as its family's speedups module defines it; returns everything applied so far. Cumulative: the
    bench's ablation calls it stage by stage."""
    applied = model.__dict__.setdefault("speedups_applied", [])
    for name in only:
        if not getattr(s, name) or name in applied:
            continue
        if model.device.type != "cuda" and name not in ANY_DEVICE:
            continue
        if name.startswith("compile"):
            enable_compile_cache(s.compile_cache_dir)
        switch = families.get(model.family).speedup_switches().get(name)
        if switch is not None and switch(model):
            applied.append(name)
    return applied


# Lossy speed-ups: never on by default; `--step-cache T` turns this one on, and the bench reports
# its difference from the exact output (PSNR) next to its speed.
def set_step_cache(model, threshold: float | None) -> str | None:
    """diffusers' First-Block Cache on the Wan transformer: a step whose first block's output
    changed less than `threshold` (relative) reuses the previous step's residual. None turns it off."""
    from ourvidz.errors import BadInput

    if not families.get(model.family).step_cache:
        raise BadInput("--step-cache (first-block cache) works on the wan family only")
    transformer = model.pipe.transformer
    if getattr(transformer, "is_cache_enabled", False):
        transformer.disable_cache()
    model.step_cache = threshold
    if threshold is None:
        return None
    if not 0 < threshold < 1:
        raise BadInput(f"--step-cache must be between 0 and 1 (got {threshold})")
    from diffusers import FirstBlockCacheConfig

    transformer.enable_cache(FirstBlockCacheConfig(threshold=threshold))
    return f"first-block cache, threshold {threshold:g} (lossy)"
