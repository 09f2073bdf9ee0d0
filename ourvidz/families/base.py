"""The interface every model family implements: load, then generate -> outputs and phase timings.

A family pipeline reads top to bottom like a diffusers pipeline: encode the prompt, denoise
(the diffusers pipeline's own loop, output_type="latent"), decode with the VAE. Splitting the
call this way is what lets the timing report show each phase.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

StepCallback = Callable[[int, int], None]  # (step done, total steps)
COMPILE_OPTIONS = {"fullgraph": True, "dynamic": False}  # every compiled region: one graph per shape


def quiet_libraries() -> None:
    """ourvidz draws its own progress; the libraries' bars and advisories would bury it."""
    import diffusers
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()


quiet_libraries()  # on import: every pipeline module imports this one first


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    negative_prompt: str
    width: int
    height: int
    steps: int
    guidance: float
    seeds: list[int]  # one per image (sdxl) or one (wan)
    frames: int = 1
    flow_shift: float | None = None
    image: Image.Image | None = None  # image-to-image: the reference, already at width x height
    strength: float | None = None  # image-to-image denoise strength (0..1]


@dataclass
class GenerationOutput:
    images: list[Image.Image] = field(default_factory=list)  # png jobs
    frames: np.ndarray | None = None  # video jobs: [F, H, W, 3] uint8
    phases: dict[str, float] = field(default_factory=dict)  # encode, denoise, decode (seconds)


def resolve_device(device: str | None) -> torch.device:
    if device:
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            from ourvidz.errors import BadInput

            raise BadInput(f"--device {device}: no CUDA GPU is available here (torch {torch.__version__})")
        return dev
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def timed(phases: dict[str, float], name: str, device: torch.device):
    sync(device)
    t0 = time.perf_counter()
    yield
    sync(device)
    phases[name] = phases.get(name, 0.0) + time.perf_counter() - t0


def generators(seeds: list[int]) -> list[torch.Generator]:
    # CPU generators: the same seed gives the same starting noise on any device.
    return [torch.Generator("cpu").manual_seed(s) for s in seeds]


def step_callback(on_step: StepCallback | None, total: int):
    def callback(pipe, i, t, kwargs):
        if on_step is not None:
            on_step(i + 1, total)
        return kwargs

    return callback


def to_uint8(pixels: torch.Tensor, processor) -> torch.Tensor:
    """A VAE's output as 0-255 bytes, computed on its device: the same operations in the same
    dtypes as the processor's postprocess(output_type="np"/"pil") followed by *255 and round, so
    the same bytes, but the CPU gets a quarter of the data and no float passes over it (for an
    81-frame video, about a second on the H100 host)."""
    return (processor.denormalize(pixels).float() * 255).round().to(torch.uint8)


def module_bytes(*modules) -> int:
    return sum(p.numel() * p.element_size() for m in modules if m is not None for p in m.parameters())


def load_component(cls, folder, subfolder: str, device: torch.device, dtype: torch.dtype | None, times: dict):
    """One component from a diffusers folder, straight onto the device (no CPU copy first on a GPU)."""
    kwargs = {"subfolder": subfolder, "local_files_only": True}
    if dtype is not None:
        kwargs["dtype"] = dtype
        if device.type == "cuda":
            kwargs["device_map"] = str(device)
    t0 = time.perf_counter()
    obj = cls.from_pretrained(folder, **kwargs)
    if dtype is not None and device.type != "cuda":
        obj = obj.to(device)
    sync(device)
    times[subfolder] = time.perf_counter() - t0
    return obj


def diffusers_folder(source) -> Path:
    """A generator family's weights as a local diffusers folder (the demo one for a demo source)."""
    from ourvidz.errors import WeightsError
    from ourvidz.families.weights import local_dir

    if source.is_demo:
        from ourvidz.families.builders import demo_folder

        return demo_folder(source.family)
    folder = local_dir(source.path, source.allow_download, source.family)
    if not (folder / "model_index.json").is_file():
        raise WeightsError(f"{folder} is not a diffusers folder (no model_index.json); "
                           f"point '{source.family}: path:' at one, or use single_file for a checkpoint")
    return folder


class FamilyPipeline:
    """Base of SDXLFamily and WanFamily. `pipe` is the diffusers pipeline."""

    family: str = ""

    def __init__(self, pipe, device: torch.device, dtype: torch.dtype, load_times: dict[str, float], identity: dict):
        self.pipe = pipe
        self.device = device
        self.dtype = dtype
        self.load_times = load_times  # component -> seconds, for the load that made this object
        self.identity = identity  # weights' path, size and header hash, for sidecars
        pipe.set_progress_bar_config(disable=True)

    def generate(self, req: GenerationRequest, on_step: StepCallback | None = None) -> GenerationOutput:
        raise NotImplementedError

    def nbytes(self) -> int:
        return module_bytes(*[m for m in self.pipe.components.values() if isinstance(m, torch.nn.Module)])

    def to(self, device: torch.device) -> None:
        """Move between GPU and CPU memory (the model cache's cheaper alternative to a reload)."""
        self.pipe.to(device)
        self.device = device
