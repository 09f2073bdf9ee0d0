"""The interface every model family implements: load, then generate -> outputs and phase timings.

A family pipeline reads top to bottom like a diffusers pipeline: encode the prompt, denoise
(the diffusers pipeline's own loop, output_type="latent"), decode with the VAE. Splitting the
call this way is what lets the timing report show each phase.
"""

from __future__ import annotations

import re
import time
import warnings
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

    # Their deprecation notices (numpy 2's copy keyword inside diffusers' schedulers, renamed
    # arguments) are about the libraries' own code, not anything a user can change.
    for category in (DeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category, module=r"(diffusers|transformers|accelerate|huggingface_hub)(\.|$)")
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
    weighting: bool = True  # prompt weighting syntax (sdxl); False: the text is literal
    image: Image.Image | None = None  # image-to-image: the reference, already at width x height
    strength: float | None = None  # image-to-image denoise strength (0..1]
    # Video: called with each chunk of [n, H, W, 3] uint8 frames as the VAE decodes it (the MP4
    # encoder, so H.264 runs beside the decode); the whole video is still returned as frames.
    on_frames: Callable[[np.ndarray], None] | None = field(default=None, repr=False, compare=False)


@dataclass
class GenerationOutput:
    images: list[Image.Image] = field(default_factory=list)  # png jobs
    frames: np.ndarray | None = None  # video jobs: [F, H, W, 3] uint8
    phases: dict[str, float] = field(default_factory=dict)  # encode, denoise, decode (seconds)
    text_encoding: dict | None = None  # per text and encoder: tokens, window, chunks, truncation, weights


def resolve_device(device: str | torch.device | None) -> torch.device:
    """--device checked here, in one line: cpu, cuda, cuda:N (N a GPU of this machine) or mps. A
    torch.device is taken as it is (code, not a user, chose it)."""
    from ourvidz.errors import BadInput

    if isinstance(device, torch.device):
        return device
    if not device:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    text = device.strip().lower()
    if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", text):
        raise BadInput(f"--device {device!r}: expected cpu, cuda, cuda:N or mps")
    kind, _, index = text.partition(":")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise BadInput(f"--device {device}: no CUDA GPU is available here (torch {torch.__version__})")
        if index and int(index) >= torch.cuda.device_count():
            raise BadInput(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                           f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise BadInput(f"--device {device}: Apple's MPS is not available here (it needs a Mac with Apple "
                       f"silicon and a torch built for it); use cpu")
    return torch.device(text)


def pin_cpu_threads(device: torch.device) -> int | None:
    """On the CPU, a fixed number of intra-op threads: $OURVIDZ_THREADS, else min(4, physical cores
    - 1) and at least 1, never more than already set (a caller that chose fewer keeps them).

    Left to itself torch takes every core, and its OpenMP threads then spin waiting on each other
    whenever anything else runs (rich's display, PNG encoding, other processes): on a shared
    2-core machine five identical demo runs took 0.91-4.06 s/step with 2 threads and 0.053-0.078
    s/step with 1. One core is left to the rest. Returns the number in use (None on a GPU)."""
    import os

    if device.type != "cpu":
        return None
    env = os.environ.get("OURVIDZ_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        n = int(env)
    else:
        n = min(4, max(1, physical_cores() - 1), torch.get_num_threads())
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def physical_cores() -> int:
    """Physical cores this process may use (hyper-threads counted once), at least 1."""
    import os

    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    cores: set[tuple[str, str]] = set()
    try:
        phys = core = ""
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            text = f.read()
        for line in text.splitlines() + [""]:
            key, _, value = line.partition(":")
            key, value = key.strip(), value.strip()
            if key == "physical id":
                phys = value
            elif key == "core id":
                core = value
            elif not key and core:
                cores.add((phys, core))
                phys = core = ""
    except OSError:
        pass
    return max(1, min(usable, len(cores) or usable))


def default_dtype(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# Pipeline phases shown as progress (denoising has its own step bar).
PHASE_NAMES = {"encode": "encode prompt", "decode": "vae decode"}


@contextmanager
def timed(phases: dict[str, float], name: str, device: torch.device):
    from ourvidz.progress import phase

    sync(device)
    t0 = time.perf_counter()
    if name in PHASE_NAMES:
        with phase(PHASE_NAMES[name]):
            yield
            sync(device)
    else:
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


def weight_bytes(folder) -> int:
    """The size of the weight files in a folder (what loading it reads)."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    return sum(f.stat().st_size for f in folder.iterdir() if f.suffix in (".safetensors", ".bin") and f.is_file())


def _variant(sub: Path) -> str | None:
    """"fp16" when a component folder holds only the fp16 variant (what `ourvidz models fetch` gets)."""
    if not sub.is_dir() or any(f.name.endswith(".safetensors") and ".fp16." not in f.name for f in sub.iterdir()):
        return None
    return "fp16" if any(f.name.endswith(".fp16.safetensors") for f in sub.iterdir()) else None


def load_component(cls, folder, subfolder: str, device: torch.device, dtype: torch.dtype | None, times: dict):
    """One component from a diffusers folder, straight onto the device (no CPU copy first on a GPU)."""
    from ourvidz.progress import phase

    kwargs = {"subfolder": subfolder, "local_files_only": True}
    if dtype is not None:
        kwargs["dtype"] = dtype
        if device.type == "cuda":
            kwargs["device_map"] = str(device)
    variant = _variant(Path(folder) / subfolder)
    if variant:
        kwargs["variant"] = variant
    size = weight_bytes(Path(folder) / subfolder)
    t0 = time.perf_counter()
    with phase(f"load {subfolder}", total=size or None, unit="B") as ph:
        obj = cls.from_pretrained(folder, **kwargs)
        if dtype is not None and device.type != "cuda":
            obj = obj.to(device)
        sync(device)
        ph.update(size)
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
        graphs = self.__dict__.pop("graphs", None)  # CUDA graphs hold the old weights' addresses
        if graphs is not None:
            graphs.clear()
        self.pipe.to(device)
        self.device = device
