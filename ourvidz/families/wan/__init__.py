"""Wan 2.1 T2V 1.3B: text to video, and one-frame generations saved as images."""

from ourvidz.families.spec import Family


FRAME_STEP = 4  # the VAE keeps 1 + (frames - 1) // 4 latent frames


def check_preset(preset, rule) -> None:
    if preset.flow_shift is None:
        raise rule("flow_shift", "the wan family needs a flow shift (5.0 in production)")
    if (preset.frames - 1) % FRAME_STEP:
        raise rule("frames", f"wan frame counts are 4k+1 (1, 5, ..., 81); got {preset.frames}")
    if preset.num_images != 1:
        raise rule("num_images", "a wan job makes one image or one video: num_images must be 1")


FAMILY = Family(
    name="wan",
    title="Wan",
    role="generator",
    components=("transformer", "vae", "text_encoder", "tokenizer", "scheduler"),
    hub_id="Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
    marker_file="model_index.json",
    fetch_patterns=("model_index.json", "scheduler/*", "transformer/*.json", "transformer/*.safetensors",
                    "vae/*.json", "vae/*.safetensors", "text_encoder/*.json", "text_encoder/*.safetensors",
                    "tokenizer/*"),
    pipeline="ourvidz.families.wan.pipeline:WanFamily",
    demo_builder="ourvidz.families.wan.build:build_demo",
    user_files="ourvidz.families.wan.build:write_user_files",
    random_builder="ourvidz.families.wan.build:RandomWan",
    queue="wan_queue",
    model_variant="wan_2_1_t2v_1_3b",
    size_multiple=16,  # the VAE downsamples by 8 and the transformer patches 2x2
    schedulers={"unipc": "UniPC"},
    speedups="ourvidz.families.wan.speedups:SWITCHES",
    step_cache=True,
    frame_step=FRAME_STEP,
    text_window=512,  # WanPipeline.__call__'s default; encode_prompt's own default is 226
    parallel_split="guidance_context",
    parallel_generate="ourvidz.families.wan.parallel:generate",
    # One frame (1560 tokens a branch at 480x832) is launch-bound: split over 2 H200s it ran 0.99x of
    # one GPU (the CFG split halves the arithmetic but not the launches, and adds an all_gather a
    # step). Such jobs run on rank 0 alone, where they get CUDA graphs (which collectives forbid).
    parallel_min_frames=2,
    check_preset=check_preset,
)
