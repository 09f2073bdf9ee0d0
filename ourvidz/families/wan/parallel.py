"""Wan on several ranks (ourvidz.distributed): the two guidance branches on different ranks,
and/or diffusers' context parallelism (Ulysses, ring) within a branch. Outputs equal the one-rank
run's: the loop is WanPipeline's own, step for step."""

from __future__ import annotations

import torch
import torch.distributed as dist

from ourvidz.distributed import ParallelContext, ParallelPlan, enable_context_parallel


def denoise_cfg_parallel(pipe, pe, npe, *, height: int, width: int, frames: int, steps: int, guidance: float,
                             generator, cfg_group, cfg_rank: int, on_step=None) -> torch.Tensor:
    """WanPipeline.__call__'s denoising loop (diffusers 0.42.1, Wan 2.1: one transformer, no
    expand_timesteps) with the conditional branch on cfg rank 0 and the unconditional one on cfg
    rank 1; the predictions are exchanged by all_gather and both ranks take the same scheduler
    step, so both hold the one-process latents."""
    transformer, device = pipe.transformer, pipe._execution_device
    if pipe.config.boundary_ratio is not None or pipe.config.expand_timesteps:
        raise ValueError("the CFG split supports Wan 2.1 text-to-video (one transformer) only")
    k = pipe.vae_scale_factor_temporal
    frames = max(frames if frames % k == 1 else frames // k * k + 1, 1)  # as the pipeline rounds
    dtype = transformer.dtype
    embeds = (pe if cfg_rank == 0 else npe).to(dtype)
    pipe.scheduler.set_timesteps(steps, device=device)
    timesteps = pipe.scheduler.timesteps
    latents = pipe.prepare_latents(1, transformer.config.in_channels, height, width, frames, torch.float32, device,
                                   generator, None)
    pipe.scheduler.set_begin_index(0)
    branch = "cond" if cfg_rank == 0 else "uncond"
    for i, t in enumerate(timesteps):
        latent_model_input = latents.to(dtype)
        timestep = t.expand(latents.shape[0])
        cache_kwargs = {"step_index": i, "sigma": float(pipe.scheduler.sigmas[i]), "num_inference_steps": len(timesteps)}
        with transformer.cache_context(branch, **cache_kwargs):
            mine = transformer(hidden_states=latent_model_input, timestep=timestep, encoder_hidden_states=embeds,
                               attention_kwargs=None, return_dict=False)[0]
        both = [torch.empty_like(mine) for _ in range(2)]
        dist.all_gather(both, mine.contiguous(), group=cfg_group)
        noise_pred, noise_uncond = both
        noise_pred = noise_uncond + guidance * (noise_pred - noise_uncond)
        latents = pipe.scheduler.step(noise_pred, t, latents, return_dict=False)[0]
        if on_step is not None:
            on_step(i + 1, steps)
    return latents


def generate(model, req, on_step, ctx: ParallelContext, plan: ParallelPlan):
    """WanFamily.generate on ctx.world ranks. Rank 0 returns the outputs; the others an empty
    GenerationOutput (their phases only)."""
    from PIL import Image

    from ourvidz.families.base import GenerationOutput, generators, step_callback, timed
    pipe, dev, out = model.pipe, model.device, GenerationOutput()
    model.set_flow_shift(req.flow_shift)
    out.text_encoding = model.text_record(req) if ctx.is_main else None
    enable_context_parallel(pipe.transformer, ctx, plan)
    on_step = on_step if ctx.is_main else None
    cfg = plan.cfg_degree == 2 and req.guidance > 1.0
    with torch.inference_mode():
        with timed(out.phases, "encode", dev):
            pe, npe = model.encode(req)
        with timed(out.phases, "denoise", dev):
            gen = generators(req.seeds[:1])[0]
            if cfg:
                mesh = ctx.mesh(plan)
                latents = denoise_cfg_parallel(
                    pipe, pe, npe, height=req.height, width=req.width, frames=req.frames, steps=req.steps,
                    guidance=req.guidance, generator=gen, cfg_group=mesh.get_group("cfg"),
                    cfg_rank=mesh.get_local_rank("cfg"), on_step=on_step)
            else:  # context parallelism only (or N == 1): the pipeline's own loop on every rank
                latents = pipe(
                    prompt_embeds=pe, negative_prompt_embeds=npe, height=req.height, width=req.width,
                    num_frames=req.frames, num_inference_steps=req.steps, guidance_scale=req.guidance,
                    generator=gen, output_type="latent", callback_on_step_end=step_callback(on_step, req.steps),
                ).frames
        if not ctx.is_main:
            return out
        with timed(out.phases, "decode", dev):
            video = model.decode(latents, req.on_frames)
    if req.frames == 1:
        out.images = [Image.fromarray(video[0])]
    else:
        out.frames = video
    return out
