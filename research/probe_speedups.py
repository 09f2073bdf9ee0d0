#!/usr/bin/env python3
"""Probe which EXACT speed-ups work for the ourvidz models, versus plain diffusers.

Standalone benchmark (not part of the product). On CUDA it builds the full-size
architectures of shared/spec/architectures.md with random weights directly on the
GPU, casts them to bfloat16 and times each variant after warm-up (median of several
repeats, CUDA events or synchronize + wall clock). Every variant is wrapped in
try/except; compiled variants run in child processes with a time limit, so a slow or
broken compile cannot take the whole run down.

    python research/probe_speedups.py --sections all --budget 540 --out $OUT
    python research/probe_speedups.py --tiny          # CPU smoke test, tiny configs
    python research/probe_speedups.py --meta-check    # parameter counts of the full configs

The two device calls of 2026-11-25 (results in research/probe-results/):
    --sections sdxl_unet,sdxl_pipe,sdxl_vae,child:unet_compile_default,child:unet_compile_ro,child:unet_regional --budget 530
    --sections wan,child:wan_regional_cudnn,wan_vae,umt5,clip,qwen,child:qwen_static,child:unet_regional,child:sdxl_vae_compile,child:wan_full_ro_1f --budget 555
each preceded by installing the carried wheels (.whl/: diffusers 0.42.1, importlib_metadata, lazy_importer).

Sections: sdxl_unet sdxl_pipe sdxl_vae sdxl_compile clip wan wan_vae wan_compile
umt5 qwen qwen_compile sdxl_vae_compile (or 'all'). --compile-variants picks the
compiled children (see CHILD_SPECS).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
import traceback

import torch

T_START = time.perf_counter()
ARGS = None
TINY = False
DEV = "cpu"
CUDA = False
DT = torch.bfloat16
ROWS: list[dict] = []
OUTDIR = "."
RESULT_FILE = None  # path for this process's rows (jsonl)


# --------------------------------------------------------------------------- utils

def log(*a):
    print(f"[{time.perf_counter() - T_START:7.1f}s]", *a, flush=True)


def elapsed():
    return time.perf_counter() - T_START


def remaining():
    return ARGS.budget - elapsed()


def have(seconds):
    """True if at least `seconds` of the run's budget is left."""
    return remaining() > seconds


def sync():
    if CUDA:
        torch.cuda.synchronize()


def free():
    gc.collect()
    if CUDA:
        torch.cuda.empty_cache()


def gpu_mem_gb():
    if not CUDA:
        return None
    return round(torch.cuda.max_memory_allocated() / 2**30, 2)


def reset_peak():
    if CUDA:
        torch.cuda.reset_peak_memory_stats()


def rec(section, variant, **kw):
    row = {"section": section, "variant": variant}
    row.update(kw)
    row.setdefault("status", "ok")
    ROWS.append(row)
    if RESULT_FILE:
        with open(RESULT_FILE, "a") as f:
            f.write(json.dumps(row, default=str) + "\n")
    short = {k: v for k, v in row.items() if k not in ("times", "traceback")}
    log("ROW", json.dumps(short, default=str))
    return row


def fail(section, variant, e, **kw):
    tb = traceback.format_exc()
    print(tb, flush=True)
    msg = f"{type(e).__name__}: {e}"
    return rec(section, variant, status="FAIL", error=msg[:600], **kw)


def skip(section, variant, why):
    return rec(section, variant, status="SKIP", error=why)


def bench(fn, warmup=2, reps=5, pre=None, events=True):
    """Median milliseconds of fn() after warm-up. `pre` runs before each call, untimed."""
    if TINY:
        warmup, reps = min(warmup, 1), min(reps, 2)
    for _ in range(warmup):
        if pre:
            pre()
        fn()
    sync()
    ts = []
    for _ in range(reps):
        if pre:
            pre()
        if CUDA and events:
            e0 = torch.cuda.Event(enable_timing=True)
            e1 = torch.cuda.Event(enable_timing=True)
            e0.record()
            fn()
            e1.record()
            e1.synchronize()
            ts.append(e0.elapsed_time(e1))
        else:
            sync()
            t = time.perf_counter()
            fn()
            sync()
            ts.append((time.perf_counter() - t) * 1e3)
    return statistics.median(ts), [round(x, 3) for x in ts]


def timed_call(fn):
    """Wall seconds of one synchronized call (for first/compiling calls)."""
    sync()
    t = time.perf_counter()
    out = fn()
    sync()
    return time.perf_counter() - t, out


def first(x):
    if isinstance(x, (tuple, list)):
        return x[0]
    if hasattr(x, "sample"):
        return x.sample
    return x


def rel_err(a, b):
    a = first(a).detach().float()
    b = first(b).detach().float()
    if a.shape != b.shape:
        return f"shape {tuple(a.shape)} vs {tuple(b.shape)}"
    nb = b.norm().item()
    d = (a - b).norm().item()
    if not math.isfinite(d) or not math.isfinite(nb):
        return "non-finite"
    return float(f"{d / max(nb, 1e-30):.3e}")


def finite(x):
    return bool(torch.isfinite(first(x).float()).all().item())


@contextlib.contextmanager
def cudnn_benchmark(on=True):
    old = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = on
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = old


def set_dynamo_limits():
    import torch._dynamo as dynamo

    for k in ("cache_size_limit", "recompile_limit"):
        if hasattr(dynamo.config, k):
            setattr(dynamo.config, k, 64)
    if hasattr(dynamo.config, "accumulated_cache_size_limit"):
        dynamo.config.accumulated_cache_size_limit = 512
    if hasattr(dynamo.config, "accumulated_recompile_limit"):
        dynamo.config.accumulated_recompile_limit = 512


# --------------------------------------------------------------------------- building

def materialize_meta_params(model, dtype, std=0.02):
    """Replace meta parameters by uninitialised device tensors filled in one kernel each."""
    memo = {}
    for mod in model.modules():
        for name, p in list(mod._parameters.items()):
            if p is None or p.device.type != "meta":
                continue
            if id(p) in memo:  # tied weights stay tied
                mod._parameters[name] = memo[id(p)]
                continue
            t = torch.empty(p.shape, device=DEV, dtype=dtype)
            if t.dim() >= 2:
                t.normal_(0.0, std)
            elif name == "weight" or "scale" in name or "gamma" in name:
                t.fill_(1.0)
            else:
                t.zero_()
            newp = torch.nn.Parameter(t, requires_grad=False)
            memo[id(p)] = newp
            mod._parameters[name] = newp
    return model


def build(ctor, how="default"):
    """Build a model on DEV and cast to bf16. Returns (model, seconds).

    default   : with torch.device(DEV): ctor(); .to(bf16)      (random init in fp32)
    meta_fill : accelerate.init_empty_weights (params on meta, buffers real) then one
                normal_/fill_ per parameter directly in bf16 on the device
    """
    sync()
    t = time.perf_counter()
    if how == "default":
        with torch.device(DEV):
            m = ctor()
        m = m.to(DT)
    elif how == "meta_fill":
        from accelerate import init_empty_weights

        with torch.device(DEV), init_empty_weights(include_buffers=False):
            m = ctor()
        materialize_meta_params(m, DT)
        if hasattr(m, "tie_weights"):  # transformers: re-tie (UMT5 shared/embed_tokens) after materializing
            m.tie_weights()
        m = m.to(DT)
    else:
        raise ValueError(how)
    m.eval()
    m.requires_grad_(False)
    sync()
    return m, time.perf_counter() - t


def build_timed(section, name, ctor):
    """Build with both methods, record both times, keep the default-built model.

    Order: default (cold), meta_fill, default again (kept), so neither method gets the
    other's warm allocator or first-use costs for free."""
    try:
        torch.manual_seed(0)
        m0, s0 = build(ctor, "default")
        del m0
        free()
        rec(section, f"build {name} default, first build", s=round(s0, 3))
    except Exception as e:  # noqa: BLE001
        fail(section, f"build {name} default, first build", e)
    torch.manual_seed(0)
    try:
        m2, s2 = build(ctor, "meta_fill")
        nparam = sum(p.numel() for p in m2.parameters())
        del m2
        free()
        rec(section, f"build {name} meta_fill", s=round(s2, 3), params_M=round(nparam / 1e6, 1))
    except Exception as e:  # noqa: BLE001
        fail(section, f"build {name} meta_fill", e)
    torch.manual_seed(0)
    m, s = build(ctor, "default")
    nparam = sum(p.numel() for p in m.parameters())
    rec(section, f"build {name} default(fp32 init,.to(bf16))", s=round(s, 3), params_M=round(nparam / 1e6, 1))
    return m


# --------------------------------------------------------------------------- configs

def cfg_unet():
    if TINY:
        return dict(
            sample_size=16, in_channels=4, out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            mid_block_type="UNetMidBlock2DCrossAttn", block_out_channels=(32, 64, 128),
            layers_per_block=1, transformer_layers_per_block=(1, 1, 2), attention_head_dim=(2, 2, 4),
            cross_attention_dim=64, addition_embed_type="text_time", addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=8 * 6 + 32, use_linear_projection=True,
            norm_num_groups=32,
        )
    return dict(
        sample_size=128, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        mid_block_type="UNetMidBlock2DCrossAttn", block_out_channels=(320, 640, 1280),
        layers_per_block=2, transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20),
        cross_attention_dim=2048, addition_embed_type="text_time", addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816, use_linear_projection=True, norm_num_groups=32,
    )


def sdxl_dims():
    """(latent side, text seq, text dim, pooled dim, image side)"""
    if TINY:
        return 16, 77, 64, 32, 128
    return 128, 77, 2048, 1280, 1024


def make_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**cfg_unet())


def make_sdxl_vae():
    from diffusers import AutoencoderKL

    boc = (32, 32, 64, 64) if TINY else (128, 256, 512, 512)
    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=boc, layers_per_block=2,
        latent_channels=4, sample_size=128 if TINY else 1024, scaling_factor=0.13025,
        force_upcast=True, norm_num_groups=32,
    )


def make_scheduler():
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
        steps_offset=1, timestep_spacing="leading", prediction_type="epsilon",
    )


def make_clip_l():
    from transformers import CLIPTextConfig, CLIPTextModel

    if TINY:
        c = CLIPTextConfig(vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, max_position_embeddings=77, hidden_act="quick_gelu",
                           projection_dim=32)
    else:
        c = CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                           num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
                           projection_dim=768)
    return CLIPTextModel(c)


def make_clip_g():
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    if TINY:
        c = CLIPTextConfig(vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, max_position_embeddings=77, hidden_act="gelu",
                           projection_dim=32)
    else:
        c = CLIPTextConfig(vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                           num_attention_heads=20, max_position_embeddings=77, hidden_act="gelu",
                           projection_dim=1280)
    return CLIPTextModelWithProjection(c)


def make_wan():
    from diffusers import WanTransformer3DModel

    if TINY:
        return WanTransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=24, in_channels=16,
            out_channels=16, text_dim=32, freq_dim=16, ffn_dim=64, num_layers=2, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024,
        )
    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16,
        out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024,
    )


def wan_dims():
    """(latent frames, latent H, latent W, text len, text dim)"""
    if TINY:
        return 3, 8, 6, 16, 32
    return 21, 104, 60, 512, 4096


def make_wan_vae():
    from diffusers import AutoencoderKLWan

    if TINY:
        return AutoencoderKLWan(base_dim=8, z_dim=16)
    return AutoencoderKLWan()


def make_umt5():
    from transformers import UMT5Config, UMT5EncoderModel

    if TINY:
        c = UMT5Config(vocab_size=1000, d_model=32, d_ff=64, num_layers=2, num_heads=4, d_kv=8,
                       feed_forward_proj="gated-gelu")
    else:
        c = UMT5Config(vocab_size=256384, d_model=4096, d_ff=10240, num_layers=24, num_heads=64, d_kv=64,
                       feed_forward_proj="gated-gelu", relative_attention_num_buckets=32,
                       relative_attention_max_distance=128)
    return UMT5EncoderModel(c)


def qwen_config():
    from transformers import Qwen2Config

    kw = dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
              num_attention_heads=28, num_key_value_heads=4, rms_norm_eps=1e-6, tie_word_embeddings=False,
              max_position_embeddings=32768)
    if TINY:
        kw.update(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2)
    try:
        c = Qwen2Config(**kw, rope_parameters={"rope_type": "default", "rope_theta": 1e6})
    except Exception:  # noqa: BLE001  older transformers
        c = Qwen2Config(**kw, rope_theta=1e6)
    c._attn_implementation = "sdpa"
    return c


def make_qwen():
    from transformers import Qwen2ForCausalLM

    return Qwen2ForCausalLM(qwen_config())


# --------------------------------------------------------------------------- SDXL

def unet_inputs(B, seed=1):
    side, seq, tdim, pdim, img = sdxl_dims()
    g = torch.Generator(DEV).manual_seed(seed)
    return dict(
        sample=torch.randn(B, 4, side, side, generator=g, device=DEV, dtype=DT),
        timestep=torch.tensor(500.0, device=DEV),
        encoder_hidden_states=torch.randn(B, seq, tdim, generator=g, device=DEV, dtype=DT),
        added_cond_kwargs={
            "text_embeds": torch.randn(B, pdim, generator=g, device=DEV, dtype=DT),
            "time_ids": torch.tensor([[img, img, 0, 0, img, img]] * B, device=DEV, dtype=DT),
        },
    )


def unet_call(unet, inp):
    # exactly the call signature StableDiffusionXLPipeline uses, so a compiled UNet's guards match
    return unet(inp["sample"], inp["timestep"], encoder_hidden_states=inp["encoder_hidden_states"],
                timestep_cond=None, cross_attention_kwargs=None, added_cond_kwargs=inp["added_cond_kwargs"],
                return_dict=False)[0]


def sdxl_batches():
    return [12, 2] if not TINY else [4, 2]


def section_sdxl_unet():
    S = "sdxl_unet"
    from torch.nn.attention import SDPBackend, sdpa_kernel

    reset_peak()
    unet = build_timed(S, "UNet2DConditionModel", make_unet)
    batches = sdxl_batches()
    inputs = {B: unet_inputs(B) for B in batches}
    ref = {}
    base = {}
    reps = 6

    def measure(name, B, ctx=contextlib.nullcontext, base_key=None):
        try:
            with ctx():
                out = unet_call(unet, inputs[B]).clone()
                ms, ts = bench(lambda: unet_call(unet, inputs[B]), warmup=2, reps=reps)
            kw = dict(B=B, ms=round(ms, 2), times=ts, finite=finite(out))
            if B in ref:
                kw["rel_err"] = rel_err(out, ref[B])
                kw["speedup"] = round(base[B] / ms, 3)
            else:
                ref[B] = out
                base[B] = ms
            rec(S, name, **kw)
            return ms
        except Exception as e:  # noqa: BLE001
            fail(S, name, e, B=B)

    for B in batches:
        measure("plain (SDPA default)", B)
    # channels_last
    try:
        unet.to(memory_format=torch.channels_last)
        for B in batches:
            measure("channels_last", B)
    except Exception as e:  # noqa: BLE001
        fail(S, "channels_last", e)
    # channels_last + fused qkv
    fused = False
    try:
        unet.fuse_qkv_projections()
        fused = True
        for B in batches:
            measure("channels_last+fuse_qkv", B)
        with cudnn_benchmark(True):
            for B in batches:
                measure("channels_last+fuse_qkv+cudnn.benchmark", B)
    except Exception as e:  # noqa: BLE001
        fail(S, "channels_last+fuse_qkv", e)
    # fused only
    try:
        unet.to(memory_format=torch.contiguous_format)
        if fused:
            for B in batches:
                measure("fuse_qkv", B)
            unet.unfuse_qkv_projections()
    except Exception as e:  # noqa: BLE001
        fail(S, "fuse_qkv", e)
    # SDPA backends on the plain model
    for bname, backend in (("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION),
                           ("efficient", SDPBackend.EFFICIENT_ATTENTION)):
        if not CUDA and bname != "efficient":
            continue
        for B in batches[:1]:
            measure(f"sdpa_kernel({bname})", B, ctx=lambda b=backend: sdpa_kernel([b]))
    with cudnn_benchmark(True):
        for B in batches:
            measure("cudnn.benchmark", B)
    for B in batches:
        measure("plain again (noise check)", B)
    rec(S, "peak GPU memory", GB=gpu_mem_gb())
    del unet, inputs, ref
    free()


def make_sdxl_pipe(unet, vae):
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline(
        vae=vae, text_encoder=None, text_encoder_2=None, tokenizer=None, tokenizer_2=None, unet=unet,
        scheduler=make_scheduler(), add_watermarker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sdxl_embeds(seed=3):
    side, seq, tdim, pdim, img = sdxl_dims()
    g = torch.Generator(DEV).manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, device=DEV, dtype=DT)  # noqa: E731
    return dict(prompt_embeds=r(1, seq, tdim), pooled_prompt_embeds=r(1, pdim),
                negative_prompt_embeds=r(1, seq, tdim), negative_pooled_prompt_embeds=r(1, pdim))


def run_sdxl_pipe(pipe, steps=15, n=6, output_type="latent"):
    side, seq, tdim, pdim, img = sdxl_dims()
    if TINY:
        steps, n = min(steps, 3), min(n, 2)
    gens = [torch.Generator(DEV).manual_seed(1000 + i) for i in range(n)]
    return pipe(**sdxl_embeds(), num_images_per_prompt=n, num_inference_steps=steps, guidance_scale=6.0,
                height=img, width=img, generator=gens, output_type=output_type).images


def pipe_bench(S, name, pipe, reps=2, output_type="latent", steps=15, base=None, ref=None, n=6):
    """Wall time of a whole pipeline call; first call reported as warm-up."""
    w, out = timed_call(lambda: run_sdxl_pipe(pipe, steps=steps, n=n, output_type=output_type))
    ts = []
    for _ in range(1 if TINY else reps):
        dt, out = timed_call(lambda: run_sdxl_pipe(pipe, steps=steps, n=n, output_type=output_type))
        ts.append(dt * 1e3)
    ms = statistics.median(ts)
    kw = dict(ms=round(ms, 1), times=[round(t, 1) for t in ts], first_call_s=round(w, 2),
              steps=steps, images=n, output_type=output_type, finite=finite(out))
    if base:
        kw["speedup"] = round(base / ms, 3)
    if ref is not None:
        kw["rel_err"] = rel_err(out, ref)
    rec(S, name, **kw)
    return ms, out


def section_sdxl_pipe():
    S = "sdxl_pipe"
    reset_peak()
    torch.manual_seed(0)
    unet, _ = build(make_unet)
    vae, _ = build(make_sdxl_vae)
    pipe = make_sdxl_pipe(unet, vae)
    base = ref = None
    try:
        base, ref = pipe_bench(S, "plain 6 img x 15 steps (latents out)", pipe)
    except Exception as e:  # noqa: BLE001
        fail(S, "plain 6 img x 15 steps", e)
    try:
        pipe_bench(S, "plain 6 img x 15 steps + bf16 VAE decode (pt out)", pipe, reps=1, output_type="pt")
    except Exception as e:  # noqa: BLE001
        fail(S, "plain + decode", e)
    try:
        unet.to(memory_format=torch.channels_last)
        unet.fuse_qkv_projections()
        pipe_bench(S, "UNet channels_last+fuse_qkv, 6x15 (latents)", pipe, base=base, ref=ref)
    except Exception as e:  # noqa: BLE001
        fail(S, "channels_last+fuse_qkv pipe", e)
    if have(60) and not TINY:
        try:
            base1, _ = pipe_bench(S, "UNet channels_last+fuse_qkv, 1 img x 30 steps (latents)", pipe, reps=1, steps=30, n=1)
        except Exception as e:  # noqa: BLE001
            fail(S, "1 img x 30", e)
    rec(S, "peak GPU memory", GB=gpu_mem_gb())
    del pipe, unet, vae
    free()


def section_sdxl_vae():
    S = "sdxl_vae"
    reset_peak()
    vae = build_timed(S, "AutoencoderKL", make_sdxl_vae)
    side, *_ = sdxl_dims()
    g = torch.Generator(DEV).manual_seed(5)
    lat = {B: torch.randn(B, 4, side, side, generator=g, device=DEV) for B in ([1, 6] if not TINY else [1, 2])}
    ref = {}
    base = {}

    def dec(B, dtype):
        return vae.decode(lat[B].to(dtype), return_dict=False)[0]

    def measure(name, dtype, Bs=None):
        for B in Bs or lat:
            try:
                out = dec(B, dtype).clone()
                ms, ts = bench(lambda: dec(B, dtype), warmup=1, reps=4 if B == 1 else 3)
                kw = dict(B=B, ms=round(ms, 2), times=ts, dtype=str(dtype), finite=finite(out))
                if B in ref:
                    kw["rel_err_vs_fp32"] = rel_err(out, ref[B])
                    kw["speedup"] = round(base[B] / ms, 3)
                else:
                    ref[B], base[B] = out, ms
                rec(S, name, **kw)
            except Exception as e:  # noqa: BLE001
                fail(S, name, e, B=B)

    try:
        vae.to(torch.float32)
        measure("fp32 (what force_upcast does for fp16 pipelines)", torch.float32)
        vae.to(DT)
        measure("bf16 (no upcast; pipeline default when VAE is bf16)", DT)
        vae.to(memory_format=torch.channels_last)
        measure("bf16 channels_last", DT)
        with cudnn_benchmark(True):
            measure("bf16 channels_last + cudnn.benchmark", DT)
        vae.to(memory_format=torch.contiguous_format)
        with cudnn_benchmark(True):
            measure("bf16 + cudnn.benchmark", DT)
        if CUDA:
            vae.to(torch.float16)
            measure("fp16 (NaN risk with the stock SDXL VAE; not a candidate)", torch.float16, Bs=[1])
    except Exception as e:  # noqa: BLE001
        fail(S, "vae variants", e)
    rec(S, "peak GPU memory", GB=gpu_mem_gb())
    del vae, lat, ref
    free()


def section_clip():
    S = "clip"
    seq = 77
    for name, ctor in (("CLIPTextModel (L)", make_clip_l), ("CLIPTextModelWithProjection (bigG)", make_clip_g)):
        try:
            m = build_timed(S, name, ctor)
            vocab = m.config.vocab_size
            for B in (2, 12):
                ids = torch.randint(0, vocab, (B, seq), device=DEV)
                ms, ts = bench(lambda: m(input_ids=ids, output_hidden_states=True), warmup=2, reps=10)
                rec(S, f"{name} forward 77 tok", B=B, ms=round(ms, 3), times=ts)
            del m
            free()
        except Exception as e:  # noqa: BLE001
            fail(S, name, e)


# --------------------------------------------------------------------------- Wan

def wan_inputs(B, frames, seed=7):
    F, H, W, L, D = wan_dims()
    g = torch.Generator(DEV).manual_seed(seed)
    return dict(
        hidden_states=torch.randn(B, 16, frames, H, W, generator=g, device=DEV, dtype=DT),
        timestep=torch.full((B,), 500.0, device=DEV),
        encoder_hidden_states=torch.randn(B, L, D, generator=g, device=DEV, dtype=DT),
    )


def wan_call(tr, inp):
    # the call signature WanPipeline uses
    return tr(**inp, attention_kwargs=None, return_dict=False)[0]


def section_wan():
    S = "wan"
    reset_peak()
    tr = build_timed(S, "WanTransformer3DModel 1.3B", make_wan)
    F = wan_dims()[0]
    shapes = {"81f B1": (1, F), "81f B2": (2, F), "1f B1": (1, 1), "1f B2": (2, 1)}
    inputs = {k: wan_inputs(*v) for k, v in shapes.items()}
    ref, base = {}, {}

    def measure(name, key, reps=None):
        try:
            out = wan_call(tr, inputs[key]).clone()
            big = key.startswith("81f")
            ms, ts = bench(lambda: wan_call(tr, inputs[key]), warmup=1 if big else 3,
                           reps=reps or (4 if big else 10))
            kw = dict(shape=key, ms=round(ms, 2), times=ts, finite=finite(out))
            if key in ref:
                kw["rel_err"] = rel_err(out, ref[key])
                kw["speedup"] = round(base[key] / ms, 3)
            else:
                ref[key], base[key] = out, ms
            rec(S, name, **kw)
            return ms
        except Exception as e:  # noqa: BLE001
            fail(S, name, e, shape=key)

    for key in shapes:
        measure("native SDPA (default)", key)
    if "81f B1" in base and "81f B2" in base:
        rec(S, "CFG: batch-2 vs two batch-1 calls (81f)", ms_b2=base["81f B2"], ms_2xb1=round(2 * base["81f B1"], 2))
    if "1f B1" in base and "1f B2" in base:
        rec(S, "CFG: batch-2 vs two batch-1 calls (1f)", ms_b2=base["1f B2"], ms_2xb1=round(2 * base["1f B1"], 2))
    for backend in ("_native_cudnn", "_native_flash", "_native_efficient", "flash", "_flash_3"):
        try:
            tr.set_attention_backend(backend)
        except Exception as e:  # noqa: BLE001
            fail(S, f"backend {backend}", e)
            continue
        keys = ["81f B1", "1f B2"] if backend != "_native_cudnn" else list(shapes)
        if backend == "_native_efficient" and not have(120):
            keys = ["1f B2"]
        for key in keys:
            measure(f"backend {backend}", key)
    try:
        tr.set_attention_backend("native")
        with torch.nn.attention.sdpa_kernel([torch.nn.attention.SDPBackend.CUDNN_ATTENTION]):
            measure("native + sdpa_kernel(CUDNN) ctx", "81f B1")
    except Exception as e:  # noqa: BLE001
        fail(S, "native + sdpa_kernel(CUDNN)", e)
    measure("native again (noise check)", "81f B1")
    rec(S, "peak GPU memory", GB=gpu_mem_gb())
    del tr, inputs, ref
    free()


def conv3d_memory_format(model, fmt):
    for mod in model.modules():
        if isinstance(mod, torch.nn.Conv3d):
            mod.weight.data = mod.weight.data.contiguous(memory_format=fmt)


def section_wan_vae():
    S = "wan_vae"
    reset_peak()
    vae = build_timed(S, "AutoencoderKLWan", make_wan_vae)
    F, H, W, L, D = wan_dims()
    g = torch.Generator(DEV).manual_seed(9)
    z = {F: torch.randn(1, 16, F, H, W, generator=g, device=DEV), 1: torch.randn(1, 16, 1, H, W, generator=g, device=DEV)}
    ref, base = {}, {}

    def measure(name, dtype, frames_list=(F, 1)):
        for fr in frames_list:
            try:
                dec = lambda: vae.decode(z[fr].to(dtype), return_dict=False)[0]  # noqa: E731
                out = dec().clone()
                ms, ts = bench(dec, warmup=1, reps=2 if fr > 1 else 5, events=False)
                kw = dict(latent_frames=fr, ms=round(ms, 1), times=ts, dtype=str(dtype), finite=finite(out))
                if fr in ref:
                    kw["rel_err_vs_fp32"] = rel_err(out, ref[fr])
                    kw["speedup"] = round(base[fr] / ms, 3)
                else:
                    ref[fr], base[fr] = out, ms
                rec(S, name, **kw)
            except Exception as e:  # noqa: BLE001
                fail(S, name, e, latent_frames=fr)

    try:
        vae.to(torch.float32)
        measure("fp32", torch.float32)
        vae.to(DT)
        measure("bf16", DT)
        with cudnn_benchmark(True):
            measure("bf16 + cudnn.benchmark", DT)
        if have(150):
            conv3d_memory_format(vae, torch.channels_last_3d)
            with cudnn_benchmark(True):
                measure("bf16 Conv3d weights channels_last_3d + cudnn.benchmark", DT, frames_list=(F,))
            conv3d_memory_format(vae, torch.contiguous_format)
    except Exception as e:  # noqa: BLE001
        fail(S, "wan vae variants", e)
    rec(S, "peak GPU memory", GB=gpu_mem_gb())
    del vae, z, ref
    free()


# --------------------------------------------------------------------------- UMT5 / Qwen

def section_umt5():
    S = "umt5"
    reset_peak()
    m = build_timed(S, "UMT5EncoderModel (umt5-xxl)", make_umt5)
    L = wan_dims()[3]
    for B in (1, 2):
        try:
            ids = torch.randint(0, m.config.vocab_size, (B, L), device=DEV)
            mask = torch.ones(B, L, dtype=torch.long, device=DEV)
            out = m(input_ids=ids, attention_mask=mask).last_hidden_state
            ms, ts = bench(lambda: m(input_ids=ids, attention_mask=mask), warmup=2, reps=8)
            rec(S, f"forward {L} tok", B=B, ms=round(ms, 2), times=ts, finite=finite(out))
        except Exception as e:  # noqa: BLE001
            fail(S, f"forward B={B}", e)
    rec(S, "peak GPU memory", GB=gpu_mem_gb())
    del m
    free()


def qwen_gen(m, ids, new, sample=True, seed=11):
    torch.manual_seed(seed)
    kw = dict(max_new_tokens=new, min_new_tokens=new, pad_token_id=0, eos_token_id=None)
    if sample:
        kw.update(do_sample=True, temperature=0.7, top_p=0.9, top_k=40, repetition_penalty=1.1)
    else:
        kw.update(do_sample=False)
    return m.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kw)


def qwen_lens():
    return (200, 150) if not TINY else (20, 10)


def section_qwen():
    S = "qwen"
    reset_peak()
    m = build_timed(S, "Qwen2ForCausalLM 7B", make_qwen)
    L, N = qwen_lens()
    g = torch.Generator(DEV).manual_seed(13)
    ids = torch.randint(0, m.config.vocab_size, (1, L), generator=g, device=DEV)
    try:
        ms, ts = bench(lambda: m(input_ids=ids), warmup=2, reps=5)
        rec(S, f"prefill forward {L} tok", ms=round(ms, 2), times=ts)
    except Exception as e:  # noqa: BLE001
        fail(S, "prefill", e)
    for sample in (True, False):
        name = f"generate {N} new (dynamic cache, eager, {'sampling t=0.7' if sample else 'greedy'})"
        try:
            w, _ = timed_call(lambda: qwen_gen(m, ids, N, sample))
            ts = []
            for _ in range(2 if sample else 1):
                dt, out = timed_call(lambda: qwen_gen(m, ids, N, sample))
                ts.append(dt)
            s = statistics.median(ts)
            ntok = out.shape[1] - L
            rec(S, name, s=round(s, 3), tok_per_s=round(ntok / s, 1), new_tokens=ntok, first_call_s=round(w, 2))
        except Exception as e:  # noqa: BLE001
            fail(S, name, e)
    rec(S, "peak GPU memory", GB=gpu_mem_gb())
    del m
    free()


# --------------------------------------------------------------------------- compiled children

CHILD_SPECS = {
    # SDXL UNet, all on the channels_last + fuse_qkv model unless said otherwise
    "unet_compile_default": dict(kind="unet", mode="default", cl=True, fuse=True, pipe=True, timeout=230),
    "unet_compile_ro": dict(kind="unet", mode="reduce-overhead", cl=True, fuse=True, pipe=True, timeout=230),
    "unet_regional": dict(kind="unet", mode="regional", cl=False, fuse=True, pipe=True, timeout=150),
    "unet_compile_default_plain": dict(kind="unet", mode="default", cl=False, fuse=False, pipe=False, timeout=200),
    "sdxl_vae_compile": dict(kind="sdxl_vae", mode="default", timeout=200),
    "wan_regional_cudnn": dict(kind="wan", mode="regional", backend="_native_cudnn", timeout=200,
                               shapes=["81f B1", "1f B1", "1f B2"]),
    "wan_regional_native": dict(kind="wan", mode="regional", backend="native", timeout=150, shapes=["81f B1"]),
    "wan_full_ro_1f": dict(kind="wan", mode="reduce-overhead", backend="native", timeout=200,
                           shapes=["1f B2", "1f B1"]),
    "qwen_static": dict(kind="qwen", mode="static", timeout=180),
}


def child_dir():
    import tempfile

    d = os.path.join(tempfile.gettempdir(), "probe_speedups_children")
    os.makedirs(d, exist_ok=True)
    return d


def run_child(name, min_needed=60):
    spec = CHILD_SPECS[name]
    S = f"compile:{name}"
    left = remaining() - 5
    if left < min_needed:
        return skip(S, name, f"budget: {left:.0f}s left")
    timeout = min(spec["timeout"], left)
    rf = os.path.join(child_dir(), f"child_{name}.jsonl")
    if os.path.exists(rf):
        os.remove(rf)
    cmd = [sys.executable, os.path.abspath(__file__), "--child", name, "--out", OUTDIR,
           "--budget", str(int(timeout))]
    if TINY:
        cmd.append("--tiny")
    log(f"child {name} starting, timeout {timeout:.0f}s")
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, start_new_session=True)
    try:
        rc = p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(Exception):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        rc = "timeout"
    dt = time.perf_counter() - t0
    n = 0
    if os.path.exists(rf):
        with open(rf) as f:
            for line in f:
                with contextlib.suppress(Exception):
                    ROWS.append(json.loads(line))
                    n += 1
    if rc != 0:
        rec(S, f"child exit {rc}", status="FAIL" if rc != "timeout" else "TIMEOUT",
            error=f"child {name} ended with {rc} after {dt:.0f}s ({n} rows kept)")
    else:
        log(f"child {name} done in {dt:.0f}s, {n} rows")
    # append to our own result file too
    if RESULT_FILE and n:
        pass
    return rc


def child_main(name):
    spec = CHILD_SPECS[name]
    S = f"compile:{name}"
    set_dynamo_limits()
    kind = spec["kind"]
    if kind == "unet":
        child_unet(S, spec)
    elif kind == "sdxl_vae":
        child_sdxl_vae(S, spec)
    elif kind == "wan":
        child_wan(S, spec)
    elif kind == "qwen":
        child_qwen(S, spec)


def child_unet(S, spec):
    torch.manual_seed(0)
    unet, _ = build(make_unet)
    if spec.get("cl"):
        unet.to(memory_format=torch.channels_last)
    if spec.get("fuse"):
        unet.fuse_qkv_projections()
    batches = sdxl_batches()
    inputs = {B: unet_inputs(B) for B in batches}
    eager = {}
    eager_ms = {}
    for B in batches:
        eager[B] = unet_call(unet, inputs[B]).clone()
        eager_ms[B], _ = bench(lambda: unet_call(unet, inputs[B]), warmup=1, reps=4)
        rec(S, "eager (same model, same process)", B=B, ms=round(eager_ms[B], 2))
    mode = spec["mode"]
    t0 = time.perf_counter()
    if mode == "regional":
        unet.compile_repeated_blocks(fullgraph=True, dynamic=False)
    else:
        unet.compile(fullgraph=True, dynamic=False, mode=None if mode == "default" else mode)
    ro = mode == "reduce-overhead"
    pre = torch.compiler.cudagraph_mark_step_begin if ro else None
    for B in batches:
        if B != batches[0] and spec.get("pipe"):
            run_child_pipe(S, spec, unet, mode)
        if not have(40):
            skip(S, f"UNet {mode}", "child budget")
            continue
        try:
            calls = []
            for _ in range(3):
                if pre:
                    pre()
                dt, out = timed_call(lambda: unet_call(unet, inputs[B]))
                calls.append(round(dt, 2))
            out = out.clone()
            ms, ts = bench(lambda: unet_call(unet, inputs[B]), warmup=2, reps=6, pre=pre)
            rec(S, f"UNet {mode} fullgraph cl={spec.get('cl')} fuse={spec.get('fuse')}", B=B, ms=round(ms, 2),
                times=ts, compile_s=calls[0], first_calls_s=calls, speedup_vs_eager_same=round(eager_ms[B] / ms, 3),
                rel_err_vs_eager=rel_err(out, eager[B]), finite=finite(out))
        except Exception as e:  # noqa: BLE001
            fail(S, f"UNet {mode}", e, B=B)
    log(f"total compile+measure {time.perf_counter() - t0:.1f}s")
    rec(S, "peak GPU memory", GB=gpu_mem_gb())


def run_child_pipe(S, spec, unet, mode):
    if not have(45):
        return skip(S, "pipeline", "child budget")
    try:
        vae, _ = build(make_sdxl_vae)
        pipe = make_sdxl_pipe(unet, vae)
        pipe_bench(S, f"pipeline 6 img x 15 steps (latents), UNet {mode}", pipe)
    except Exception as e:  # noqa: BLE001
        fail(S, "pipeline", e)


def child_sdxl_vae(S, spec):
    torch.manual_seed(0)
    vae, _ = build(make_sdxl_vae)
    vae.to(memory_format=torch.channels_last)
    side, *_ = sdxl_dims()
    g = torch.Generator(DEV).manual_seed(5)
    lat = {B: torch.randn(B, 4, side, side, generator=g, device=DEV, dtype=DT) for B in ([1, 6] if not TINY else [1, 2])}
    dec = lambda B: vae.decode(lat[B], return_dict=False)[0]  # noqa: E731
    eager, eager_ms = {}, {}
    for B in lat:
        eager[B] = dec(B).clone()
        eager_ms[B], _ = bench(lambda: dec(B), warmup=1, reps=3)
        rec(S, "eager bf16 channels_last (same process)", B=B, ms=round(eager_ms[B], 2))
    vae.decoder.compile(fullgraph=True, dynamic=False)
    for B in lat:
        try:
            c0, out = timed_call(lambda: dec(B))
            out = out.clone()
            ms, ts = bench(lambda: dec(B), warmup=1, reps=4)
            rec(S, "VAE decoder compiled (default, fullgraph) bf16 channels_last", B=B, ms=round(ms, 2), times=ts,
                compile_s=round(c0, 2), speedup_vs_eager_same=round(eager_ms[B] / ms, 3),
                rel_err_vs_eager=rel_err(out, eager[B]), finite=finite(out))
        except Exception as e:  # noqa: BLE001
            fail(S, "VAE compiled", e, B=B)
    rec(S, "peak GPU memory", GB=gpu_mem_gb())


def child_wan(S, spec):
    torch.manual_seed(0)
    tr, _ = build(make_wan)
    if not CUDA:
        spec = dict(spec, backend="native")  # CPU smoke test: cuDNN attention does not exist there
    if spec["backend"] != "native":
        tr.set_attention_backend(spec["backend"])
    F = wan_dims()[0]
    all_shapes = {"81f B1": (1, F), "81f B2": (2, F), "1f B2": (2, 1), "1f B1": (1, 1)}
    shapes = spec.get("shapes") or list(all_shapes)
    inputs = {k: wan_inputs(*all_shapes[k]) for k in shapes}
    eager, eager_ms = {}, {}
    for k in shapes:
        try:
            eager[k] = wan_call(tr, inputs[k]).clone()
            eager_ms[k], _ = bench(lambda: wan_call(tr, inputs[k]), warmup=1, reps=3 if k.startswith("81") else 8)
            rec(S, f"eager backend={spec['backend']} (same process)", shape=k, ms=round(eager_ms[k], 2))
        except Exception as e:  # noqa: BLE001
            fail(S, f"eager backend={spec['backend']}", e, shape=k)
            return
    mode = spec["mode"]
    if mode == "regional":
        tr.compile_repeated_blocks(fullgraph=True, dynamic=False)
    else:
        tr.compile(fullgraph=True, dynamic=False, mode=mode)
    ro = mode == "reduce-overhead"
    pre = torch.compiler.cudagraph_mark_step_begin if ro else None
    for k in shapes:
        if not have(30):
            skip(S, f"Wan {mode} {k}", "child budget")
            continue
        try:
            calls = []
            for _ in range(3 if ro else 2):
                if pre:
                    pre()
                dt, out = timed_call(lambda: wan_call(tr, inputs[k]))
                calls.append(round(dt, 2))
            out = out.clone()
            big = k.startswith("81")
            ms, ts = bench(lambda: wan_call(tr, inputs[k]), warmup=1, reps=4 if big else 10, pre=pre)
            rec(S, f"Wan {mode} fullgraph backend={spec['backend']}", shape=k, ms=round(ms, 2), times=ts,
                compile_s=calls[0], first_calls_s=calls, speedup_vs_eager_same=round(eager_ms[k] / ms, 3),
                rel_err_vs_eager=rel_err(out, eager[k]), finite=finite(out))
        except Exception as e:  # noqa: BLE001
            fail(S, f"Wan {mode} {k}", e)
    rec(S, "peak GPU memory", GB=gpu_mem_gb())


def child_qwen(S, spec):
    torch.manual_seed(0)
    m, _ = build(make_qwen)
    L, N = qwen_lens()
    g = torch.Generator(DEV).manual_seed(13)
    ids = torch.randint(0, m.config.vocab_size, (1, L), generator=g, device=DEV)
    qwen_gen(m, ids, 8, False)
    t0 = time.perf_counter()
    greedy_eager = qwen_gen(m, ids, N, False)
    eager_s = time.perf_counter() - t0
    rec(S, "eager greedy (same process)", s=round(eager_s, 3), tok_per_s=round(N / eager_s, 1))
    m.generation_config.cache_implementation = "static"
    if not CUDA:  # CPU smoke test: make transformers auto-compile here too
        from transformers import CompileConfig

        cc = CompileConfig()
        cc._compile_all_devices = True
        m.generation_config.compile_config = cc
    for sample in (False, True):
        name = f"static cache (auto-compile), {'sampling' if sample else 'greedy'}"
        try:
            calls = []
            for _ in range(3):
                dt, out = timed_call(lambda: qwen_gen(m, ids, N, sample))
                calls.append(dt)
            best = min(calls[1:])
            kw = dict(s=round(best, 3), tok_per_s=round(N / best, 1), first_calls_s=[round(c, 2) for c in calls],
                      speedup_vs_eager_same=round(eager_s / best, 3) if not sample else None)
            if not sample:
                a = out[0, L:].tolist()
                b = greedy_eager[0, L:].tolist()
                same = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), len(a))
                kw["greedy_tokens_equal_prefix"] = f"{same}/{len(a)}"
            rec(S, name, **kw)
        except Exception as e:  # noqa: BLE001
            fail(S, name, e)
    rec(S, "peak GPU memory", GB=gpu_mem_gb())


# --------------------------------------------------------------------------- main

def versions():
    import importlib

    info = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}
    for mod in ("diffusers", "transformers", "accelerate", "huggingface_hub", "safetensors", "triton"):
        try:
            info[mod] = importlib.import_module(mod).__version__
        except Exception as e:  # noqa: BLE001
            info[mod] = f"n/a ({type(e).__name__})"
    if CUDA:
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, sm=f"{p.major}.{p.minor}", sms=p.multi_processor_count,
                    gpu_mem_GiB=round(p.total_memory / 2**30, 1))
        with contextlib.suppress(Exception):
            info["sdp_priority_order"] = [str(torch._C._SDPBackend(i)) for i in torch._C._get_sdp_priority_order()]
        with contextlib.suppress(Exception):
            r = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit",
                                "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
            info["nvidia_smi"] = r.stdout.strip()
    return info


def matmul_probe():
    S = "card"
    try:
        n = 8192 if not TINY else 256
        a = torch.randn(n, n, device=DEV, dtype=DT)
        b = torch.randn(n, n, device=DEV, dtype=DT)
        ms, _ = bench(lambda: a @ b, warmup=3, reps=10)
        rec(S, f"bf16 matmul {n}^3", ms=round(ms, 3), TFLOPs=round(2 * n**3 / ms / 1e9, 1))
    except Exception as e:  # noqa: BLE001
        fail(S, "matmul", e)


def fmt(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def table(rows):
    lines = ["| section | variant | shape | time | speed-up | compile/first s | rel err | status / note |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        shape = r.get("shape") or (f"B={r['B']}" if "B" in r else "") or (
            f"{r['latent_frames']} lat.frames" if "latent_frames" in r else "")
        if "ms" in r:
            t = f"{fmt(r['ms'])} ms"
        elif "s" in r:
            t = f"{fmt(r['s'])} s"
        elif "GB" in r:
            t = f"{fmt(r['GB'])} GB"
        elif "ms_b2" in r:
            t = f"B2 {fmt(r['ms_b2'])} / 2xB1 {fmt(r['ms_2xb1'])} ms"
        else:
            t = ""
        if "tok_per_s" in r:
            t += f" ({fmt(r['tok_per_s'])} tok/s)"
        if "TFLOPs" in r:
            t += f" ({fmt(r['TFLOPs'])} TFLOP/s)"
        sp = r.get("speedup") or r.get("speedup_vs_eager_same")
        comp = r.get("compile_s") or r.get("first_call_s")
        if r.get("first_calls_s"):
            comp = "/".join(fmt(x) for x in r["first_calls_s"])
        err = r.get("rel_err", r.get("rel_err_vs_eager", r.get("rel_err_vs_fp32", "")))
        note = r["status"]
        if r.get("error"):
            note += ": " + r["error"].replace("|", "/").replace("\n", " ")[:160]
        if r.get("finite") is False:
            note += " NON-FINITE OUTPUT"
        if r.get("greedy_tokens_equal_prefix"):
            note += f" greedy equal prefix {r['greedy_tokens_equal_prefix']}"
        if r.get("params_M"):
            note += f" {r['params_M']} M params"
        lines.append(f"| {r['section']} | {r['variant']} | {shape} | {t} | {fmt(sp) + 'x' if sp else ''} | "
                     f"{fmt(comp)} | {fmt(err)} | {note} |")
    return "\n".join(lines)


ALL_SECTIONS = ["sdxl_unet", "sdxl_pipe", "sdxl_vae", "sdxl_compile", "clip", "wan", "wan_vae",
                "wan_compile", "umt5", "qwen", "qwen_compile", "sdxl_vae_compile"]
SECTION_FUNCS = {
    "sdxl_unet": section_sdxl_unet, "sdxl_pipe": section_sdxl_pipe, "sdxl_vae": section_sdxl_vae,
    "clip": section_clip, "wan": section_wan, "wan_vae": section_wan_vae, "umt5": section_umt5,
    "qwen": section_qwen,
}
SECTION_CHILDREN = {
    "sdxl_compile": None,  # filled from --compile-variants
    "wan_compile": ["wan_regional_cudnn", "wan_full_ro_1f", "wan_regional_native"],
    "qwen_compile": ["qwen_static"],
    "sdxl_vae_compile": ["sdxl_vae_compile"],
}


def meta_check():
    global DEV
    DEV = "meta"
    for name, ctor in (("unet", make_unet), ("sdxl_vae", make_sdxl_vae), ("clip_l", make_clip_l),
                       ("clip_g", make_clip_g), ("wan", make_wan), ("wan_vae", make_wan_vae),
                       ("umt5", make_umt5), ("qwen", make_qwen)):
        with torch.device("meta"):
            m = ctor()
        print(f"{name:10s} {sum(p.numel() for p in m.parameters()) / 1e6:10.1f} M params")


def main():
    global ARGS, TINY, DEV, CUDA, OUTDIR, RESULT_FILE
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny configs (CPU smoke test)")
    ap.add_argument("--sections", default="all")
    ap.add_argument("--compile-variants", default="unet_compile_default,unet_compile_ro,unet_regional")
    ap.add_argument("--budget", type=float, default=540.0, help="seconds for the whole run")
    ap.add_argument("--out", default=os.environ.get("OUT") or "probe-out")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--meta-check", action="store_true")
    ARGS = ap.parse_args()
    TINY = ARGS.tiny
    if ARGS.meta_check:
        meta_check()
        return
    CUDA = torch.cuda.is_available()
    DEV = "cuda" if CUDA else "cpu"
    OUTDIR = ARGS.out
    os.makedirs(OUTDIR, exist_ok=True)
    torch.set_grad_enabled(False)
    if not CUDA and not TINY:
        print("no CUDA: use --tiny for the CPU smoke test", flush=True)
    if ARGS.child:
        RESULT_FILE = os.path.join(child_dir(), f"child_{ARGS.child}.jsonl")
        log(f"child {ARGS.child} (budget {ARGS.budget:.0f}s)")
        child_main(ARGS.child)
        return
    RESULT_FILE = os.path.join(OUTDIR, "rows.jsonl")
    if os.path.exists(RESULT_FILE):
        os.remove(RESULT_FILE)
    import diffusers.utils.logging as dlog

    dlog.set_verbosity_error()
    info = versions()
    print("VERSIONS " + json.dumps(info), flush=True)
    matmul_probe()
    sections = ALL_SECTIONS if ARGS.sections == "all" else ARGS.sections.split(",")
    SECTION_CHILDREN["sdxl_compile"] = [c for c in ARGS.compile_variants.split(",") if c]
    for sec in sections:
        log(f"=== section {sec} ({remaining():.0f}s budget left)")
        if not have(20):
            skip(sec, sec, "budget")
            continue
        try:
            if sec.startswith("child:"):
                run_child(sec.split(":", 1)[1])
            elif sec in SECTION_FUNCS:
                SECTION_FUNCS[sec]()
            else:
                for child in SECTION_CHILDREN[sec]:
                    run_child(child)
        except Exception as e:  # noqa: BLE001
            fail(sec, "section", e)
        free()
    summary = {"versions": info, "args": vars(ARGS), "wall_s": round(elapsed(), 1), "rows": ROWS}
    with open(os.path.join(OUTDIR, "results.json"), "w") as f:
        json.dump(summary, f, indent=1, default=str)
    md = table(ROWS)
    with open(os.path.join(OUTDIR, "table.md"), "w") as f:
        f.write("versions: " + json.dumps(info) + "\n\n" + md + "\n")
    print("\nVERSIONS " + json.dumps(info))
    print(md, flush=True)
    log("done")


if __name__ == "__main__":
    main()
