"""SDXL: text to image, all of a job's images in one batched call (the production LUSTIFY model)."""

from ourvidz.families.spec import Family


def check_preset(preset, rule) -> None:
    if preset.frames != 1:
        raise rule("frames", "the sdxl family makes images: frames must be 1")


FAMILY = Family(
    name="sdxl",
    title="SDXL",
    role="generator",
    components=("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler"),
    hub_id="stabilityai/stable-diffusion-xl-base-1.0",
    marker_file="model_index.json",
    # The fp16 safetensors of each loaded component (loaded in the device's dtype), configs and
    # tokenizers: about 7 GB of the base repository's 70.
    fetch_patterns=(
        "model_index.json", "scheduler/*.json",
        "unet/config.json", "unet/diffusion_pytorch_model.fp16.safetensors",
        "vae/config.json", "vae/diffusion_pytorch_model.fp16.safetensors",
        "text_encoder/config.json", "text_encoder/model.fp16.safetensors",
        "text_encoder_2/config.json", "text_encoder_2/model.fp16.safetensors",
        "tokenizer/*", "tokenizer_2/*",
    ),
    pipeline="ourvidz.families.sdxl.pipeline:SDXLFamily",
    demo_builder="ourvidz.families.sdxl.build:build_demo",
    user_files="ourvidz.families.sdxl.build:write_user_files",
    random_builder="ourvidz.families.sdxl.build:RandomSDXL",
    single_file=True,
    queue="sdxl_queue",
    model_variant="lustify_sdxl",
    size_multiple=8,  # the VAE downsamples by 8
    schedulers={"euler": "Euler"},
    speedups="ourvidz.families.sdxl.speedups:SWITCHES",
    clip_window=77,
    multi_image=True,
    img2img=True,
    parallel_split="images",
    parallel_generate="ourvidz.families.sdxl.parallel:generate",
    check_preset=check_preset,
)
