"""Wan's exact speed-ups (the switches of ourvidz.speedups that apply to this family)."""

from __future__ import annotations

import torch

from ourvidz.families.base import COMPILE_OPTIONS


def batch_cfg(model) -> bool:
    model.batch_cfg = True
    return True


def vae_layout(model) -> bool:
    # The Wan VAE also has 2-D convolutions, so the module-wide .to(channels_last_3d) fails.
    for m in model.pipe.vae.modules():
        if isinstance(m, torch.nn.Conv3d):
            m.weight.data = m.weight.data.contiguous(memory_format=torch.channels_last_3d)
    torch.backends.cudnn.benchmark = True
    return True


def attention_backend(model) -> bool:
    if torch.cuda.get_device_capability()[0] < 9:  # cuDNN's fused attention pays off on Hopper
        return False
    model.pipe.transformer.set_attention_backend("_native_cudnn")
    return True


def compile_blocks(model) -> bool:
    # Regional compile as diffusers' compile_repeated_blocks does it, but of each block's forward
    # rather than its __call__: a step cache (--step-cache) wraps the forwards in hooks, which then
    # run eagerly around the compiled blocks. Compiling __call__ made dynamo trace into the hooks'
    # state and fail. All 30 blocks share one graph (the same code, shapes and dtypes).
    for block in model.pipe.transformer.blocks:
        block.forward = torch.compile(block.forward, **COMPILE_OPTIONS)
    return True


SWITCHES = {"batch_cfg": batch_cfg, "vae_layout": vae_layout, "attention_backend": attention_backend,
            "compile": compile_blocks}
