"""SDXL's exact speed-ups (the switches of ourvidz.speedups that apply to this family)."""

from __future__ import annotations

import torch

from ourvidz.families.base import COMPILE_OPTIONS


def compile_blocks(model) -> bool:
    model.pipe.unet.compile_repeated_blocks(**COMPILE_OPTIONS)
    return True


def compile_resnets(model) -> bool:
    # diffusers' regional compile covers only the UNet's transformer blocks; its ResNet blocks (about
    # half the time, GroupNorm and SiLU unfused in eager) come in 12 channel/size combinations, one
    # graph each, more than dynamo's default of 8 per code object.
    from diffusers.models.resnet import ResnetBlock2D

    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 32)
    for m in model.pipe.unet.modules():
        if isinstance(m, ResnetBlock2D):
            m.compile(**COMPILE_OPTIONS)
    return True


def compile_vae(model) -> bool:
    vae = model.pipe.vae
    vae.to(memory_format=torch.channels_last)  # pays only compiled (slower eager)
    vae.decoder.compile(**COMPILE_OPTIONS)
    return True


SWITCHES = {"compile": compile_blocks, "compile_resnets": compile_resnets, "compile_vae": compile_vae}
