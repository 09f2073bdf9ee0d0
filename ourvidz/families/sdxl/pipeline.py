"""SDXL: StableDiffusionXLPipeline, all images of a job in one batched call, one generator a seed.
Image-to-image (a reference image and a denoise strength) runs StableDiffusionXLImg2ImgPipeline
made with from_pipe on the same resident components: no second load, no extra memory.

Weights come as a diffusers folder (or hub id), the demo folder, or a single-file checkpoint
(the production system's LUSTIFY .safetensors) whose configs and tokenizers are read from a
local folder, so that nothing contacts a hub.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from PIL import Image

from ourvidz.errors import WeightsError
from ourvidz.families.base import (
    FamilyPipeline, GenerationOutput, GenerationRequest, diffusers_folder, generators, load_component, step_callback,
    sync, timed, to_uint8,
)
from ourvidz.progress import phase
from ourvidz.families.weights import ModelSource, identity, local_dir, safetensors_header, sha256_in_background


def scheduler_for(name: str, config):
    from diffusers import EulerDiscreteScheduler

    if name != "euler":
        raise ValueError(f"sdxl has no scheduler {name!r}")
    return EulerDiscreteScheduler.from_config(config)


class SDXLFamily(FamilyPipeline):
    family = "sdxl"

    @classmethod
    def load(cls, source: ModelSource, device: torch.device, dtype: torch.dtype) -> SDXLFamily:
        from diffusers import AutoencoderKL, StableDiffusionXLPipeline, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

        times: dict[str, float] = {}
        if source.kind == "single_file":
            path = Path(source.path)
            if not path.is_file():
                raise WeightsError(f"sdxl checkpoint {path} does not exist; fix 'sdxl: single_file:' in {source.origin}")
            safetensors_header(path)  # a clear error for a truncated or foreign file
            config = local_dir(source.config, source.allow_download, "sdxl", allow_patterns=["*.json", "*.txt"])
            # The A1111 model hash reads the whole file once (then it is remembered): on a thread,
            # beside the load, which reads the same pages.
            sha256 = sha256_in_background(path)
            pipe = _from_single_file(path, config, device, dtype, times)
            t0 = time.perf_counter()
            digest = sha256.result()
            times["hash (beyond the load)"] = time.perf_counter() - t0
            return cls(pipe, device, dtype, times, identity(source, sha256=digest))

        folder = diffusers_folder(source)
        pipe = StableDiffusionXLPipeline(
            unet=load_component(UNet2DConditionModel, folder, "unet", device, dtype, times),
            vae=load_component(AutoencoderKL, folder, "vae", device, dtype, times),
            text_encoder=load_component(CLIPTextModel, folder, "text_encoder", device, dtype, times),
            text_encoder_2=load_component(CLIPTextModelWithProjection, folder, "text_encoder_2", device, dtype, times),
            tokenizer=CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer"),
            tokenizer_2=CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer_2"),
            scheduler=scheduler_for("euler", _scheduler_config(folder)),
            add_watermarker=False,
        )
        return cls(pipe, device, dtype, times, identity(source, folder))

    @property
    def tokenizer(self):
        return self.pipe.tokenizer

    def img2img_pipe(self):
        """StableDiffusionXLImg2ImgPipeline sharing this pipeline's modules (made once)."""
        if getattr(self, "_img2img", None) is None:
            from diffusers import StableDiffusionXLImg2ImgPipeline

            self._img2img = StableDiffusionXLImg2ImgPipeline.from_pipe(self.pipe)
            self._img2img.set_progress_bar_config(disable=True)
        return self._img2img

    def generate(self, req: GenerationRequest, on_step=None, parallel=None) -> GenerationOutput:
        if parallel is not None and parallel.world > 1:  # one job on N ranks: ourvidz.distributed
            from ourvidz.distributed import parallel_generate

            return parallel_generate(self, req, on_step, parallel)
        pipe, dev, out = self.pipe, self.device, GenerationOutput()
        if req.image is not None:
            return self.generate_img2img(req, on_step)
        with torch.inference_mode():
            # The text encoders run once per job; the embeddings are repeated for every image.
            with timed(out.phases, "encode", dev):
                # --- prompt encoding: long prompts and weights (families/sdxl/prompts.py) ---
                from ourvidz.families.sdxl.prompts import encode

                enc = encode(pipe, req.prompt, req.negative_prompt, weighting=req.weighting, device=dev,
                             num_images=len(req.seeds), cfg=req.guidance > 1.0)
                pe, npe, ppe, nppe = (enc.prompt_embeds, enc.negative_prompt_embeds, enc.pooled_prompt_embeds,
                                      enc.negative_pooled_prompt_embeds)
                out.text_encoding = enc.record
                # --- end of prompt encoding ---
            with timed(out.phases, "denoise", dev):
                latents = pipe(
                    prompt_embeds=pe, negative_prompt_embeds=npe, pooled_prompt_embeds=ppe,
                    negative_pooled_prompt_embeds=nppe, width=req.width, height=req.height,
                    num_inference_steps=req.steps, guidance_scale=req.guidance, generator=generators(req.seeds),
                    output_type="latent", callback_on_step_end=step_callback(on_step, req.steps),
                ).images
            with timed(out.phases, "decode", dev):
                out.images = self.decode(latents)
        return out

    def generate_img2img(self, req: GenerationRequest, on_step=None) -> GenerationOutput:
        """The reference image noised to `strength` and denoised with the prompt: int(steps * strength)
        steps run (diffusers' rule), all images of the job in one batch, one generator a seed."""
        pipe, dev, out = self.img2img_pipe(), self.device, GenerationOutput()
        runs = max(1, int(req.steps * req.strength))
        with torch.inference_mode():
            with timed(out.phases, "encode", dev):
                pe, npe, ppe, nppe = pipe.encode_prompt(
                    req.prompt, device=dev, num_images_per_prompt=len(req.seeds),
                    do_classifier_free_guidance=req.guidance > 1.0, negative_prompt=req.negative_prompt or None)
            with timed(out.phases, "denoise", dev):
                latents = pipe(
                    prompt_embeds=pe, negative_prompt_embeds=npe, pooled_prompt_embeds=ppe,
                    negative_pooled_prompt_embeds=nppe, image=req.image, strength=req.strength,
                    num_inference_steps=req.steps, guidance_scale=req.guidance, generator=generators(req.seeds),
                    output_type="latent", callback_on_step_end=step_callback(on_step, runs),
                ).images
            with timed(out.phases, "decode", dev):
                out.images = self.decode(latents)
        return out

    def plain_call(self, prompt: str, negative: str | None, preset, seeds: list[int]) -> list[Image.Image]:
        """The job as a plain diffusers script runs it (the bench's reference): PIL images."""
        return self.pipe(prompt=prompt, negative_prompt=negative, num_images_per_prompt=preset.num_images,
                         generator=generators(seeds), num_inference_steps=preset.steps,
                         guidance_scale=preset.guidance, width=preset.width, height=preset.height).images

    def decode(self, latents: torch.Tensor):
        """The pipeline's own decode, one image at a time: the same pixels, a sixth of the peak memory."""
        vae = self.pipe.vae
        cfg = vae.config
        latents = latents.to(vae.dtype)
        if getattr(cfg, "latents_mean", None) is not None and getattr(cfg, "latents_std", None) is not None:
            mean = torch.tensor(cfg.latents_mean).view(1, 4, 1, 1).to(latents)
            std = torch.tensor(cfg.latents_std).view(1, 4, 1, 1).to(latents)
            latents = latents * std / cfg.scaling_factor + mean
        else:
            latents = latents / cfg.scaling_factor
        images = []
        for i in range(latents.shape[0]):
            pixels = vae.decode(latents[i : i + 1], return_dict=False)[0]
            rgb = to_uint8(pixels, self.pipe.image_processor)[0].permute(1, 2, 0)
            images.append(Image.fromarray(rgb.cpu().numpy()))
        return images


def _from_single_file(path: Path, config: Path, device: torch.device, dtype: torch.dtype, times: dict):
    """An A1111/LDM checkpoint through diffusers' single-file loaders, component by component: the
    file is read once, straight onto the device in the dtype it was saved in (safetensors), and
    each component's keys are converted and cast to the run's dtype there, so no float passes
    through the CPU and the weights are not copied again by a pipeline move. The same conversions
    as StableDiffusionXLPipeline.from_single_file, so the same weights (tests/test_cold_start.py).
    A bf16 run of an fp16 file holds both copies of a component for a moment (about 5 GB for the
    UNet)."""
    from diffusers import AutoencoderKL, StableDiffusionXLPipeline, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import create_diffusers_clip_model_from_ldm
    from safetensors.torch import load_file
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    size = path.stat().st_size
    t0 = time.perf_counter()
    with phase("read checkpoint", total=size, unit="B") as ph:
        checkpoint = load_file(str(path), device=str(device))
        sync(device)
        ph.update(size)
    times["checkpoint read"] = time.perf_counter() - t0
    common = {"config": str(config), "local_files_only": True, "torch_dtype": dtype}
    parts = {}
    for name, cls in (("unet", UNet2DConditionModel), ("vae", AutoencoderKL)):
        t0 = time.perf_counter()
        with phase(f"convert {name}"):
            parts[name] = cls.from_single_file(checkpoint, subfolder=name, device=device, **common)
            sync(device)
        times[name] = time.perf_counter() - t0
    for name, cls in (("text_encoder", CLIPTextModel), ("text_encoder_2", CLIPTextModelWithProjection)):
        t0 = time.perf_counter()
        with phase(f"convert {name}"):  # diffusers places CLIP on the CPU; small (1.6 GB in all)
            parts[name] = create_diffusers_clip_model_from_ldm(cls, checkpoint, subfolder=name, **common).to(device)
            sync(device)
        times[name] = time.perf_counter() - t0
    del checkpoint
    return StableDiffusionXLPipeline(
        **parts, tokenizer=CLIPTokenizer.from_pretrained(config, subfolder="tokenizer"),
        tokenizer_2=CLIPTokenizer.from_pretrained(config, subfolder="tokenizer_2"),
        scheduler=scheduler_for("euler", _scheduler_config(config)), add_watermarker=False)


def _scheduler_config(folder: Path) -> dict:
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler.load_config(folder, subfolder="scheduler")
