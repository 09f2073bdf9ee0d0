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


def vae_padding(model) -> bool:
    """The VAE's causal convolutions pad height and width with F.pad, a copy of the whole input,
    before each convolution; the convolution's own zero padding gives the same sums without the
    copy (81-frame decode on an H200: 2.08 -> 1.88 s, frames identical). Time keeps its causal
    padding (the cached frames, or zeros in front)."""
    import torch.nn.functional as F
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d

    def forward_of(conv):
        t_pad, h_pad, w_pad = conv._padding[4], conv._padding[2], conv._padding[0]
        if conv._padding[3] != h_pad or conv._padding[1] != w_pad:
            return None  # asymmetric: keep the library's F.pad

        def forward(x, cache_x=None):
            t = t_pad
            if cache_x is not None and t > 0:
                x = torch.cat([cache_x.to(x.device), x], dim=2)
                t -= cache_x.shape[2]
            if t > 0:
                x = F.pad(x, (0, 0, 0, 0, t, 0))
            return F.conv3d(x, conv.weight, conv.bias, conv.stride, (0, h_pad, w_pad), conv.dilation, conv.groups)
        return forward

    vae = getattr(getattr(model, "pipe", None), "vae", None)
    changed = 0
    for conv in vae.modules() if vae is not None else ():
        if isinstance(conv, WanCausalConv3d) and (forward := forward_of(conv)) is not None:
            conv.forward = forward
            changed += 1
    return changed > 0


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


def cuda_graph(model) -> bool:
    # One-frame jobs are launch-bound: a batch-2 one-frame forward is ~25-37 ms on an H200 for ~11 ms
    # of arithmetic. denoise_batched_cfg replays the whole transformer call (the compiled blocks
    # inside it) from a CUDA graph per input signature (ourvidz.families.graphs): no full-graph
    # compile (82 s a shape for mode="reduce-overhead"), the same kernels, checked bit for bit
    # against an eager call on capture. Off on the CPU, under a step cache and under context
    # parallelism (graphed_transformer).
    if model.device.type != "cuda":
        return False
    model.cuda_graph = True
    return True


def graph_blocker(model) -> str | None:
    """Why the transformer call cannot be graphed now, or None: CUDA graphs need a CUDA device,
    no hooks that keep state between calls (the step cache decides per call whether to run the
    blocks) and no collectives inside the call (diffusers' context parallelism)."""
    t = model.pipe.transformer
    if not getattr(model, "cuda_graph", False):
        return "switched off"
    if model.device.type != "cuda":
        return "not on a CUDA device"
    if getattr(model, "step_cache", None) is not None or getattr(t, "is_cache_enabled", False):
        return "a step cache is on"
    if getattr(t, "_parallel_config", None) is not None or getattr(t, "_ourvidz_cp", None) is not None:
        return "context parallelism (collectives in the call)"
    return None


def graphed_transformer(model):
    """The transformer call of a one-frame job: a GraphedCall where graphs apply, else the module."""
    t = model.pipe.transformer
    if graph_blocker(model) is not None:
        return t
    graphs = model.__dict__.get("graphs")
    if graphs is None:
        from ourvidz.families.graphs import GraphedCall

        applied = model.__dict__.setdefault("speedups_applied", [])
        notes = model.__dict__.setdefault("speedup_notes", [])
        first = next(t.parameters())
        # What else changes the captured work: switches applied later (compile, attention), and the
        # weights' storage (a move to the CPU and back gives new addresses; FamilyPipeline.to clears).
        graphs = model.graphs = GraphedCall(t, key_extra=lambda: (tuple(applied), first.data_ptr()), notes=notes,
                                            name="wan transformer")
    return graphs


SWITCHES = {"batch_cfg": batch_cfg, "vae_layout": vae_layout, "vae_padding": vae_padding,
            "attention_backend": attention_backend,
            "compile": compile_blocks, "cuda_graph": cuda_graph}
