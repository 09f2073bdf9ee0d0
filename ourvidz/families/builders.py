"""What the families' model builders share: the tiny demo models' on-disk cache and the helpers
that build full-size random architectures straight on the device.

Each family's build.py makes two kinds of model that need no download:
- demo: tiny deterministic random weights saved in the real on-disk formats (diffusers folders, an
  A1111/LDM single-file SDXL checkpoint, a transformers causal LM), so the production loading code
  runs on them; outputs are noise; each builder is byte-deterministic and takes seconds.
- random: the full-size architectures (../shared/spec/architectures.md) with random weights, for
  measuring speed where the real weights can't be had (speed does not depend on weight values).
"""

from __future__ import annotations

import hashlib
import inspect
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch

# Small built-in text used to build the offline T5 / Qwen tokenizers.
CORPUS = (
    "a photo of a cat sitting on a wooden table next to a window with soft morning light. the quick brown fox "
    "jumps over the lazy dog in the park at sunset. cinematic shot of a city street at night, neon lights, rain, "
    "reflections, people walking. portrait of a woman smiling, close up, detailed face, studio lighting, 35mm film. "
    "landscape with mountains, a river, a forest and snow under a blue sky with white clouds. ocean waves crash on "
    "the beach while birds fly over the water. a dog runs and plays. slow motion video of a car driving on a road "
    "through the desert, dust, camera pan. you are a helpful assistant. rewrite the prompt to be more detailed and "
    "vivid. user: make a video of a red balloon flying. assistant: a bright red balloon drifts upward. "
    "high quality, masterpiece, best quality, sharp focus, 4k, 8k, 1080p, 24 fps, 0123456789."
)


def save_pipeline_configs(pipe, folder) -> Path:
    """model_index.json + component configs + tokenizers + scheduler, without weights: the
    `config=` folder for `from_single_file`."""
    from diffusers import ConfigMixin

    folder = Path(folder)
    pipe.save_config(folder)
    for name, comp in pipe.components.items():
        if isinstance(comp, ConfigMixin):
            comp.save_config(folder / name)  # diffusers models and schedulers
        elif isinstance(comp, torch.nn.Module):
            comp.config.save_pretrained(folder / name)  # transformers models
        elif comp is not None:
            comp.save_pretrained(folder / name)  # tokenizers
    return folder


def demo_folder(family: str, root=None, **options) -> Path:
    """The demo model folder of a family, built once under $OURVIDZ_CACHE/demo (~/.cache/ourvidz).

    `options` go to the family's builder (sdxl: clip_vocab). The name hashes the builders' source,
    the options and the torch/diffusers/transformers versions, so a change rebuilds. Built in a
    temporary folder and renamed into place: a folder under the final name is always complete.
    """
    import diffusers
    import transformers

    from ourvidz.families import FAMILIES

    if family not in FAMILIES:
        raise ValueError(f"no demo model for {family!r}; known: {', '.join(FAMILIES)}")
    spec = FAMILIES[family]
    root = Path(root or os.environ.get("OURVIDZ_CACHE", Path.home() / ".cache" / "ourvidz")) / "demo"
    stamp = f"{torch.__version__}/{diffusers.__version__}/{transformers.__version__}/{sorted(options.items())}".encode()
    source = Path(__file__).read_bytes() + Path(inspect.getsourcefile(spec.build_demo_function())).read_bytes()
    folder = root / f"{family}-{hashlib.sha256(source + stamp).hexdigest()[:12]}"
    if not folder.is_dir():
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{family}-", dir=root))
        try:
            spec.build_demo(tmp, **options)
            try:
                os.replace(tmp, folder)
            except OSError:  # another process finished first; its bytes are the same
                if not folder.is_dir():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


@contextmanager
def on_device(device: torch.device, dtype: torch.dtype):
    """Parameters are created on the device in the target dtype: no CPU copy, no fp32 detour."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(old)


def finish(modules, device, dtype):
    for m in modules:
        m.to(device=device, dtype=dtype).eval().requires_grad_(False)


RANDOM_IDENTITY = {"kind": "random", "note": "full-size architecture, random weights (speed only)"}


def built_for_user_files(family: str, size: str, device: torch.device, dtype: torch.dtype):
    """A family's model to write as user files: the random full-size architecture built on the
    device in the written dtype, or the tiny demo model (size "demo") read from its cache. Its
    pipeline (sdxl, wan) or (model, tokenizer) (the enhancer). The global RNG is left alone."""
    from ourvidz.families import ENHANCER, FAMILIES

    if size == "full":
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            model = FAMILIES[family].random_class().load(None, device, dtype)
        return (model.model, model.tokenizer) if family == ENHANCER else model.pipe
    from diffusers import DiffusionPipeline

    folder = demo_folder(family)
    if family == ENHANCER:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        return (AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=dtype),
                AutoTokenizer.from_pretrained(folder, local_files_only=True))
    return DiffusionPipeline.from_pretrained(folder, local_files_only=True, dtype=dtype)


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def safetensors_files(folder) -> list[str]:
    return sorted(str(f) for f in Path(folder).rglob("*.safetensors"))
