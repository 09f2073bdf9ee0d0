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

# The order the bench adds them in for its cumulative ablation table.
SWITCHES = ("channels_last", "fuse_qkv", "attention_backend", "compile", "compile_vae")


@dataclass
class Speedups:
    channels_last: bool = True  # SDXL UNet and VAE: convolutions in NHWC, the layout cuDNN prefers
    fuse_qkv: bool = True  # SDXL UNet self-attention: one QKV matmul instead of three
    attention_backend: bool = True  # Wan: cuDNN's fused attention (diffusers' _native_cudnn) on Hopper
    compile: bool = True  # SDXL: torch.compile of the UNet; Wan: regional compile of the repeated blocks
    compile_vae: bool = True  # SDXL VAE decoder, torch.compile
    compile_cache_dir: str | None = None  # persistent inductor cache (default ~/.cache/ourvidz/inductor)

    @classmethod
    def off(cls) -> Speedups:
        return cls(**{f.name: False for f in fields(cls) if f.name != "compile_cache_dir"})

    @classmethod
    def for_device(cls, device: torch.device) -> Speedups:
        # On the CPU (demo models) compiling costs more than it saves.
        return cls() if device.type == "cuda" else cls.off()

    def upto(self, name: str) -> Speedups:
        """Switches up to and including `name` on (SWITCHES order), the rest off."""
        on = SWITCHES[: SWITCHES.index(name) + 1]
        return Speedups(**{s: s in on for s in SWITCHES}, compile_cache_dir=self.compile_cache_dir)

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
    """Apply the switches that are on (among `only`) to a loaded SDXLFamily or WanFamily, once each;
    returns everything applied so far. Cumulative: the bench's ablation calls it stage by stage."""
    applied = model.__dict__.setdefault("speedups_applied", [])
    if model.device.type != "cuda":
        return applied
    for name in only:
        if not getattr(s, name) or name in applied:
            continue
        if name.startswith("compile"):
            enable_compile_cache(s.compile_cache_dir)
        if _SWITCH[model.family][name](model.pipe):
            applied.append(name)
    return applied


def _sdxl_channels_last(pipe) -> bool:
    pipe.unet.to(memory_format=torch.channels_last)
    pipe.vae.to(memory_format=torch.channels_last)
    return True


def _sdxl_fuse_qkv(pipe) -> bool:
    pipe.fuse_qkv_projections()
    return True


def _sdxl_compile(pipe) -> bool:
    pipe.unet.compile(fullgraph=True)
    return True


def _sdxl_compile_vae(pipe) -> bool:
    pipe.vae.decoder.compile(fullgraph=True)
    return True


def _wan_attention(pipe) -> bool:
    if torch.cuda.get_device_capability()[0] < 9:  # cuDNN's fused attention pays off on Hopper
        return False
    pipe.transformer.set_attention_backend("_native_cudnn")
    return True


def _wan_compile(pipe) -> bool:
    pipe.transformer.compile_repeated_blocks(fullgraph=True)
    return True


def _not_for_family(pipe) -> bool:
    return False


_SWITCH = {
    "sdxl": {"channels_last": _sdxl_channels_last, "fuse_qkv": _sdxl_fuse_qkv, "attention_backend": _not_for_family,
             "compile": _sdxl_compile, "compile_vae": _sdxl_compile_vae},
    "wan": {"channels_last": _not_for_family, "fuse_qkv": _not_for_family, "attention_backend": _wan_attention,
            "compile": _wan_compile, "compile_vae": _not_for_family},
}
