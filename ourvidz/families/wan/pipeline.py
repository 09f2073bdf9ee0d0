"""Wan 2.1 text-to-video: WanPipeline with UniPC at the preset's flow shift.

Image jobs are one-frame generations saved as PNG. The VAE stays in float32 (diffusers' advice
for Wan); the transformer and the UMT5 encoder run in the device's dtype.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ourvidz.families.base import (
    FamilyPipeline, GenerationOutput, GenerationRequest, diffusers_folder, generators, load_component, step_callback,
    timed, to_uint8,
)
from ourvidz.families.wan import FAMILY
from ourvidz.families.wan.speedups import graphed_transformer
from ourvidz.families.weights import ModelSource, identity

MAX_TEXT_TOKENS = FAMILY.text_window


class WanFamily(FamilyPipeline):
    family = "wan"
    # One batch-2 transformer call for the conditional and unconditional branches instead of
    # WanPipeline's two batch-1 calls: the same arithmetic per sample, half the launches. It pays
    # where the call is launch-bound (one-frame image jobs: ~2.5x per step on an H100) and not for
    # 81-frame videos, which stay on the pipeline's own loop. Switched on by ourvidz.speedups.
    batch_cfg = False
    cuda_graph = False  # one-frame transformer calls replayed from CUDA graphs (wan/speedups.py says why)

    @classmethod
    def load(cls, source: ModelSource, device: torch.device, dtype: torch.dtype) -> WanFamily:
        from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
        from transformers import AutoTokenizer, UMT5EncoderModel

        folder = diffusers_folder(source)
        times: dict[str, float] = {}
        pipe = WanPipeline(
            transformer=load_component(WanTransformer3DModel, folder, "transformer", device, dtype, times),
            vae=load_component(AutoencoderKLWan, folder, "vae", device, torch.float32, times),
            text_encoder=load_component(UMT5EncoderModel, folder, "text_encoder", device, dtype, times),
            tokenizer=AutoTokenizer.from_pretrained(folder, subfolder="tokenizer"),
            scheduler=UniPCMultistepScheduler.from_pretrained(folder, subfolder="scheduler"),
        )
        return cls(pipe, device, dtype, times, identity(source, folder))

    def set_flow_shift(self, flow_shift: float) -> None:
        from diffusers import UniPCMultistepScheduler

        sched = self.pipe.scheduler
        if not isinstance(sched, UniPCMultistepScheduler) or sched.config.get("flow_shift") != flow_shift:
            self.pipe.scheduler = UniPCMultistepScheduler.from_config(
                sched.config, prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=flow_shift)

    def generate(self, req: GenerationRequest, on_step=None, parallel=None) -> GenerationOutput:
        if parallel is not None and parallel.world > 1:  # one job on N ranks: ourvidz.distributed
            from ourvidz.distributed import parallel_generate

            return parallel_generate(self, req, on_step, parallel)
        pipe, dev, out = self.pipe, self.device, GenerationOutput()
        self.set_flow_shift(req.flow_shift)
        out.text_encoding = self.text_record(req)
        with torch.inference_mode():
            with timed(out.phases, "encode", dev):
                pe, npe = self.encode(req)
            with timed(out.phases, "denoise", dev):
                if self.batch_cfg and req.frames == 1 and npe is not None:
                    latents = self.denoise_batched_cfg(req, pe, npe, on_step)
                else:
                    latents = pipe(
                        prompt_embeds=pe, negative_prompt_embeds=npe, height=req.height, width=req.width,
                        num_frames=req.frames, num_inference_steps=req.steps, guidance_scale=req.guidance,
                        generator=generators(req.seeds[:1])[0], output_type="latent",
                        callback_on_step_end=step_callback(on_step, req.steps),
                    ).frames
            with timed(out.phases, "decode", dev):
                video = self.decode(latents, req.on_frames)  # [F, H, W, 3] uint8
        if req.frames == 1:
            out.images = [Image.fromarray(video[0])]
        else:
            out.frames = video
        return out

    def encode(self, req: GenerationRequest):
        """(prompt embeddings, negative embeddings or None) from UMT5, at the pipeline's 512-token window."""
        return self.pipe.encode_prompt(req.prompt, req.negative_prompt or None,
                                       do_classifier_free_guidance=req.guidance > 1.0,
                                       max_sequence_length=MAX_TEXT_TOKENS, device=self.device)

    def text_record(self, req: GenerationRequest) -> dict:
        """UMT5 tokens of the prompt and the negative (as WanPipeline cleans and tokenizes them, EOS
        included) against the encoder's window; past it the pipeline cuts the text, and this says so."""
        from diffusers.pipelines.wan.pipeline_wan import prompt_clean

        from ourvidz.clip_tokens import token_ids

        tok = self.pipe.tokenizer
        record: dict = {"route": "diffusers", "weighting": False, "notes": []}
        for what, text in (("prompt", req.prompt), ("negative", req.negative_prompt if req.guidance > 1.0 else "")):
            if not text:
                record[what] = None
                continue
            tokens = len(token_ids(tok, prompt_clean(text))) + tok.num_special_tokens_to_add()
            cut = tokens > MAX_TEXT_TOKENS
            record[what] = {"text_encoder": {"tokens": tokens, "window": MAX_TEXT_TOKENS, "chunks": 1,
                                             "truncated": cut, "weighted": []}}
            if cut:
                record["notes"].append(f"wan: the {what} is {tokens} UMT5 tokens; the encoder reads "
                                       f"{MAX_TEXT_TOKENS}, the last {tokens - MAX_TEXT_TOKENS} are cut")
        return record

    def denoise_batched_cfg(self, req: GenerationRequest, pe, npe, on_step=None) -> torch.Tensor:
        """WanPipeline's denoising loop with both guidance branches in one call (same latents,
        timesteps and scheduler steps as the pipeline's)."""
        pipe, dev = self.pipe, self.device
        dtype = pipe.transformer.dtype
        pipe.scheduler.set_timesteps(req.steps, device=dev)
        pipe.scheduler.set_begin_index(0)
        latents = pipe.prepare_latents(1, pipe.transformer.config.in_channels, req.height, req.width, req.frames,
                                       torch.float32, dev, generators(req.seeds[:1])[0])
        embeds = torch.cat([npe, pe]).to(dtype)
        # One frame is launch-bound: the call replays from a CUDA graph where graphs apply (the
        # cuda_graph switch; never under a step cache, whose hooks keep state between calls).
        call = graphed_transformer(self) if req.frames == 1 else pipe.transformer
        for i, t in enumerate(pipe.scheduler.timesteps):
            x = latents.to(dtype).expand(2, *latents.shape[1:])
            with pipe.transformer.cache_context("cfg"):  # a step cache keeps its state per context
                uncond, cond = call(hidden_states=x, timestep=t.expand(2), encoder_hidden_states=embeds,
                                    return_dict=False)[0].chunk(2)
            noise = uncond + req.guidance * (cond - uncond)
            latents = pipe.scheduler.step(noise, t, latents, return_dict=False)[0]
            if on_step is not None:
                on_step(i + 1, req.steps)
        return latents

    def plain_call(self, prompt: str, negative: str | None, preset, seeds: list[int]) -> np.ndarray:
        """The job as a plain diffusers script runs it (the bench's reference): [F, H, W, 3] uint8."""
        self.set_flow_shift(preset.flow_shift)
        frames = self.pipe(prompt=prompt, negative_prompt=negative, height=preset.height, width=preset.width,
                           num_frames=preset.frames, num_inference_steps=preset.steps,
                           guidance_scale=preset.guidance, generator=generators(seeds[:1])[0]).frames[0]
        return (np.clip(frames, 0, 1) * 255).round().astype(np.uint8)

    def decode(self, latents: torch.Tensor, on_frames=None) -> np.ndarray:
        """The pipeline's own decode (denormalise with the VAE's latent statistics), one latent
        frame at a time: each chunk of pixels goes to on_frames (the MP4 encoder) as soon as it
        exists, and the whole video is returned. [F, H, W, 3] uint8."""
        vae = self.pipe.vae
        z = vae.config.z_dim
        latents = latents.to(vae.device, vae.dtype)
        mean = torch.tensor(vae.config.latents_mean).view(1, z, 1, 1, 1).to(latents)
        inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, z, 1, 1, 1).to(latents)
        chunks = []
        for pixels in decode_chunks(vae, latents / inv_std + mean):  # [1, 3, f, H, W]
            frames = to_uint8(pixels[0], self.pipe.video_processor).permute(1, 2, 3, 0).contiguous().cpu().numpy()
            if on_frames is not None:
                on_frames(frames)
            chunks.append(frames)
        return np.concatenate(chunks)


def decode_chunks(vae, z: torch.Tensor):
    """AutoencoderKLWan.decode (diffusers 0.42.1 `_decode`) as a generator: the same decoder calls
    on the same causal feature cache, one latent frame at a time, each chunk of pixels (1 frame,
    then 4 a latent frame) clamped and given out as it is made instead of concatenated at the end;
    the concatenation of the chunks equals vae.decode's output. Tiling, slicing or a patchified
    VAE (Wan 2.2) take the library's own decode, in one chunk."""
    if getattr(vae, "use_tiling", False) or getattr(vae, "use_slicing", False) or vae.config.patch_size is not None:
        yield vae.decode(z, return_dict=False)[0]
        return
    vae.clear_cache()
    try:
        x = vae.post_quant_conv(z)
        for i in range(x.shape[2]):
            vae._conv_idx = [0]
            out = vae.decoder(x[:, :, i:i + 1], feat_cache=vae._feat_map, feat_idx=vae._conv_idx,
                              first_chunk=i == 0)
            yield torch.clamp(out, min=-1.0, max=1.0)
    finally:
        vae.clear_cache()
