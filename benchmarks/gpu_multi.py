"""Wan 2.1 1.3B on one and several GPUs of one host, through ourvidz.distributed (one command:
it starts and stops its own ranks).

Full-size random transformer (bf16) + VAE (fp32), prompt embeddings given (the text encoder is
not what is measured), video_fast settings: 81 frames 480x832, 25 steps, cfg 6.5, UniPC flow
shift 5. For each configuration: the denoise time (after a 2-step warm-up in the same process),
the VAE decode, and the max abs difference of the final latents and of the decoded frames from
the one-GPU run's.

    cd REPO && PYTHONPATH=. python benchmarks/gpu_multi.py                       # 1gpu cfg2 ulysses2
    PYTHONPATH=. python benchmarks/gpu_multi.py --configs 1gpu,cfg2,ulysses2,ring2 --compile
    PYTHONPATH=. python benchmarks/gpu_multi.py --configs 1gpu,cfg2_ulysses2 (4 GPUs)

The device machine has no diffusers: carry the wheel as the device README says. Prints one JSON
object (and writes it to $OUT/gpu_multi.json when OUT is set).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import time

import numpy as np
import torch

from ourvidz.distributed import NO_MULTICAST, ParallelContext, ParallelPlan, enable_context_parallel, launch

os.environ.update(NO_MULTICAST)  # never NVLink multicast (KINDS.md); each rank sets them again

CONFIGS = {  # name -> (cfg, ulysses, ring)
    "1gpu": (1, 1, 1), "cfg2": (2, 1, 1), "ulysses2": (1, 2, 1), "ring2": (1, 1, 2),
    "cfg2_ulysses2": (2, 2, 1), "ulysses4": (1, 4, 1), "cfg2_ulysses4": (2, 4, 1),
}


def build_pipeline(dev: torch.device):
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel

    torch.manual_seed(0)  # the same random weights on every GPU (same kernels, same generator)
    with torch.device(dev):
        tr = WanTransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16, out_channels=16,
            text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024).to(torch.bfloat16).eval()
        vae = AutoencoderKLWan().to(torch.float32).eval()
    sched = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000,
                                    flow_shift=5.0)
    pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=vae, scheduler=sched, transformer=tr)
    pipe.set_progress_bar_config(disable=True)
    return pipe


class RandomWan:
    """What ourvidz.distributed needs of a WanFamily (pipe, device, decode), without a text encoder."""

    family = "wan"

    def __init__(self, pipe, device):
        self.pipe, self.device = pipe, device

    def decode(self, latents):
        from ourvidz.families.wan.pipeline import WanFamily

        return WanFamily.decode(self, latents)


def bench_rank(ctx: ParallelContext, name: str, args) -> dict:
    import torch.distributed as dist

    from ourvidz.families.wan.parallel import denoise_cfg_parallel

    cfg, ulysses, ring = CONFIGS[name]
    plan = ParallelPlan(cfg * ulysses * ring, "wan", cfg_degree=cfg, ulysses_degree=ulysses, ring_degree=ring)
    dev = ctx.device
    t0 = time.perf_counter()
    pipe = build_pipeline(dev)
    if torch.cuda.get_device_capability(dev)[0] >= 9:
        pipe.transformer.set_attention_backend("_native_cudnn")  # as ourvidz.speedups on Hopper
    enable_context_parallel(pipe.transformer, ctx, plan)
    if args.compile:  # ourvidz.speedups' regional compile (fullgraph only without the CP hooks' collectives)
        from ourvidz.speedups import COMPILE_OPTIONS

        opts = COMPILE_OPTIONS if plan.cp_degree == 1 else {**COMPILE_OPTIONS, "fullgraph": False}
        for block in pipe.transformer.blocks:
            block.forward = torch.compile(block.forward, **opts)
    g = torch.Generator(device=dev).manual_seed(1)
    pe = torch.randn(1, 512, 4096, device=dev, dtype=torch.bfloat16, generator=g)
    npe = torch.randn(1, 512, 4096, device=dev, dtype=torch.bfloat16, generator=g)
    build_s = time.perf_counter() - t0

    def denoise(steps: int):
        gen = torch.Generator("cpu").manual_seed(7)  # ourvidz's CPU generators
        kw = dict(height=args.height, width=args.width, steps=steps, guidance=args.guidance, generator=gen)
        if cfg == 2:
            mesh = ctx.mesh(plan)
            return denoise_cfg_parallel(pipe, pe, npe, frames=args.frames, cfg_group=mesh.get_group("cfg"),
                                            cfg_rank=mesh.get_local_rank("cfg"), **kw)
        return pipe(prompt_embeds=pe, negative_prompt_embeds=npe, height=args.height, width=args.width,
                    num_frames=args.frames, num_inference_steps=steps, guidance_scale=args.guidance,
                    generator=gen, output_type="latent").frames

    def timed(fn):
        torch.cuda.synchronize(dev)
        if ctx.active:
            dist.barrier()
        t = time.perf_counter()
        r = fn()
        torch.cuda.synchronize(dev)
        return time.perf_counter() - t, r

    with torch.inference_mode():
        warm_s, _ = timed(lambda: denoise(2))
        denoise_s, latents = timed(lambda: denoise(args.steps))
        res = {"config": name, "plan": plan.describe(), "build_s": round(build_s, 2), "warmup_2_steps_s": round(warm_s, 2),
               "denoise_s": round(denoise_s, 3), "ms_per_step": round(1000 * denoise_s / args.steps, 1),
               "peak_gb": round(torch.cuda.max_memory_allocated(dev) / 1e9, 2)}
        if ctx.is_main:
            decode_s, frames = timed(lambda: RandomWan(pipe, dev).decode(latents))
            res |= {"decode_s": round(decode_s, 2), "latents": latents.float().cpu(), "frames": frames}
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="1gpu,cfg2,ulysses2", help=f"comma-separated, of {', '.join(CONFIGS)}")
    ap.add_argument("--frames", type=int, default=81)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=832)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--guidance", type=float, default=6.5)
    ap.add_argument("--compile", action="store_true", help="regional compile of the transformer blocks")
    args = ap.parse_args()
    names = args.configs.split(",")
    if "1gpu" in names:  # the reference first
        names.remove("1gpu")
        names.insert(0, "1gpu")
    out = {"gpu": torch.cuda.get_device_name(0), "gpus": torch.cuda.device_count(), "torch": torch.__version__,
           "compile": args.compile, "frames": args.frames, "size": f"{args.width}x{args.height}", "steps": args.steps,
           "guidance": args.guidance, "runs": []}
    import diffusers

    out["diffusers"] = diffusers.__version__
    ref = None
    for name in names:
        cfg, ulysses, ring = CONFIGS[name]
        n = cfg * ulysses * ring
        try:
            # 1gpu runs in this process (launch(1, ...)); the others spawn n ranks.
            res = launch(n, bench_rank, name, args, device_type="cuda")
        except Exception as exc:  # one failed configuration does not lose the others
            out["runs"].append({"config": name, "error": f"{type(exc).__name__}: {exc}"[:500]})
            print(json.dumps(out["runs"][-1]), flush=True)
            continue
        latents, frames = res.pop("latents"), res.pop("frames")
        if ref is None and name == "1gpu":
            ref = (latents, frames)
        elif ref is not None:
            res["latents_max_abs_diff_vs_1gpu"] = float((latents - ref[0]).abs().max())
            res["frames_max_abs_diff_vs_1gpu"] = int(np.abs(frames.astype(np.int16) - ref[1].astype(np.int16)).max())
            base = next(r for r in out["runs"] if r["config"] == "1gpu")
            res["speedup_vs_1gpu"] = round(base["denoise_s"] / res["denoise_s"], 2)
        out["runs"].append(res)
        print(json.dumps(res), flush=True)
        gc.collect()
        torch.cuda.empty_cache()
    print(json.dumps(out, indent=1))
    if os.environ.get("OUT"):
        with open(os.path.join(os.environ["OUT"], "gpu_multi.json"), "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
