"""What a model family declares (one Family per folder under families/): the registry's schema.

Light on purpose (no torch, no diffusers): the heavy parts are named as "module:attribute" and
imported on first use.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

Role = Literal["generator", "enhancer"]


def _resolve(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class Family:
    name: str
    title: str  # as people write it, for messages
    role: Role  # a generator makes the job's images or video; the enhancer rewrites prompts
    components: tuple[str, ...]  # the parts of its weights, as diffusers/transformers name them
    hub_id: str  # default weights on the Hugging Face hub (`ourvidz models fetch`)
    marker_file: str  # a folder of this family's weights holds this file
    pipeline: str  # "module:Class" with load(source, device, dtype) -> a loaded family object
    demo_builder: str  # "module:function(folder)" saving the tiny random-weight model there
    random_builder: str  # "module:Class" whose load() builds the full-size architecture, random weights
    # "module:function(folder, size, device, precision) -> (models-file entry, record)": the demo or
    # random full-size model written into folder as a user has it (the cold-start bench)
    user_files: str | None = None
    # The files of a hub repository this family loads (huggingface_hub allow_patterns): `ourvidz
    # models fetch` downloads only these, not the repository's flax, onnx or openvino copies.
    fetch_patterns: tuple[str, ...] = ()
    single_file: bool = False  # whether a single-file checkpoint (A1111 layout) loads
    queue: str | None = None  # the production Redis list its jobs arrive on
    model_variant: str | None = None  # the production payload's model_variant
    size_multiple: int | None = None  # width and height are multiples of this (latent grid)
    schedulers: dict[str, str] = field(default_factory=dict)  # preset name -> A1111 sampler name
    speedups: str | None = None  # "module:SWITCHES": switch name -> function(model) -> applied
    step_cache: bool = False  # the lossy first-block cache (--step-cache) applies
    clip_window: int | None = None  # the prompt window of a CLIP text encoder, where it has one
    text_window: int | None = None  # tokens its text encoder reads (UMT5: 512)
    multi_image: bool = False  # one job makes num_images images
    img2img: bool = False  # reference-image modes (img2img, exact copy) run on its resident components
    parallel_split: str | None = None  # one job on N ranks: "images" or "guidance_context" (ourvidz.distributed)
    parallel_generate: str | None = None  # "module:function(model, req, on_step, ctx, plan)" for it
    # Jobs with fewer frames than this run on one GPU under --gpus N: they do not scale (None: all split)
    parallel_min_frames: int | None = None
    frame_step: int | None = None  # video frame counts are frame_step * k + 1 (Wan: 4, its VAE's stride)
    check_preset: Callable[[Any, Callable[[str, str], Exception]], None] | None = None  # extra preset rules

    def pipeline_class(self):
        return _resolve(self.pipeline)

    def random_class(self):
        return _resolve(self.random_builder)

    def user_files_function(self) -> Callable:
        return _resolve(self.user_files)

    def build_demo_function(self) -> Callable:
        return _resolve(self.demo_builder)

    def build_demo(self, folder, **kwargs):
        return self.build_demo_function()(folder, **kwargs)

    def parallel_generate_function(self) -> Callable:
        return _resolve(self.parallel_generate)

    def speedup_switches(self) -> dict[str, Callable]:
        return _resolve(self.speedups) if self.speedups else {}
