"""Random weights written as users have them on disk, for the cold-start bench (issue #12).

A user's SDXL is one A1111/LDM single-file checkpoint (fp16 safetensors, about 6.9 GB at full
size) with a weightless config folder beside it (model_index.json, component configs,
tokenizers, scheduler: what `from_single_file(config=...)` reads, so that nothing asks the hub);
Wan and Qwen are diffusers / transformers folders as `ourvidz models fetch` leaves them. This
module builds each family's model with the families' own builders (the random full-size
architectures, or the tiny demo models for tests), writes it in those formats through
diffusers' / transformers' / safetensors' own savers, one family at a time with the memory freed
in between, and writes a models file (`--models`) naming what it wrote. A cold start then loads
them through exactly the loaders a user's files take.
"""

from __future__ import annotations

import errno
import gc
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from ourvidz import families
from ourvidz.errors import BadInput

# The dtypes each component is written in: those of the files users load. SDXL: a civitai-style
# fp16 checkpoint (LUSTIFY's is fp16 throughout). Wan: Wan-AI/Wan2.1-T2V-1.3B-Diffusers ships
# float32 safetensors for every component (the conversion script saves what it loads: a 5.7 GB
# transformer, a 22.7 GB UMT5 encoder in shards, a 0.5 GB VAE); the loader casts the transformer
# and the encoder to the device's dtype and keeps the VAE in float32. "half" writes the transformer
# and the encoder in bfloat16 (what a user who re-saved them at the precision they run in has:
# 40% of the bytes), the VAE still float32. Qwen/Qwen2.5-7B ships bfloat16.
PRECISIONS = {
    "hub": {"sdxl": torch.float16, "wan": torch.float32, "wan_vae": torch.float32, "qwen": torch.bfloat16},
    "half": {"sdxl": torch.float16, "wan": torch.bfloat16, "wan_vae": torch.float32, "qwen": torch.bfloat16},
}
SIZES = ("full", "demo")


@dataclass
class WrittenWeights:
    """What write_user_weights wrote: the models file and, per family, its files, route, bytes and
    seconds (build, write)."""
    models_file: Path
    families: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"models_file": str(self.models_file), "families": self.families}


def families_for_jobs(jobs: list[str]) -> list[str]:
    """The families the job types load (the enhancer only where a job enhances), in first-use order."""
    from ourvidz.presets import load_preset

    needed: list[str] = []
    for job in jobs:
        preset = load_preset(job)
        for fam in ([families.ENHANCER] if preset.enhance else []) + [preset.family]:
            if fam not in needed:
                needed.append(fam)
    return needed


def _bytes_under(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _cast(modules, dtype: torch.dtype) -> None:
    for m in modules:
        m.to(dtype=dtype)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _build(family: str, size: str, device: torch.device, dtype: torch.dtype):
    """The family's model in memory: its pipeline (sdxl, wan) or (model, tokenizer) (qwen)."""
    spec = families.get(family)
    if size == "full":  # the random full-size architecture, built on the device in the written dtype
        model = spec.random_class().load(None, device, dtype)
        return (model.model, model.tokenizer) if family == families.ENHANCER else model.pipe
    from ourvidz.families.builders import demo_folder

    folder = demo_folder(family)  # the tiny demo weights (cached, byte-deterministic)
    if family == "sdxl":
        from diffusers import StableDiffusionXLPipeline

        return StableDiffusionXLPipeline.from_pretrained(folder, local_files_only=True, dtype=dtype)
    if family == "wan":
        from diffusers import WanPipeline

        return WanPipeline.from_pretrained(folder, local_files_only=True, dtype=dtype)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return (AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=dtype),
            AutoTokenizer.from_pretrained(folder, local_files_only=True))


def _write_sdxl(built, root: Path, dtypes: dict) -> tuple[dict, dict]:
    from ourvidz.families.sdxl.single_file import save_single_file

    _cast([built.unet, built.vae, built.text_encoder, built.text_encoder_2], dtypes["sdxl"])
    ckpt, config = root / "sdxl" / "ourvidz-random-sdxl.safetensors", root / "sdxl" / "config"
    tmp = ckpt.with_name(f".{ckpt.name}.{os.getpid()}")
    save_single_file(built, tmp, config_dir=config)  # the weights in one file; configs and tokenizers beside
    _fsync(tmp)
    os.replace(tmp, ckpt)  # a file under the final name is complete
    return ({"single_file": str(ckpt), "config": str(config)},
            {"route": "single_file", "files": [str(ckpt)], "dtype": _name(dtypes["sdxl"])})


def _write_wan(built, root: Path, dtypes: dict) -> tuple[dict, dict]:
    _cast([built.transformer, built.text_encoder], dtypes["wan"])
    _cast([built.vae], dtypes["wan_vae"])
    folder = root / "wan"
    built.save_pretrained(folder, safe_serialization=True)
    return ({"path": str(folder)},
            {"route": "folder", "files": sorted(str(f) for f in folder.rglob("*.safetensors")),
             "dtype": {"transformer": _name(dtypes["wan"]), "text_encoder": _name(dtypes["wan"]),
                       "vae": _name(dtypes["wan_vae"])}})


def _write_qwen(built, root: Path, dtypes: dict) -> tuple[dict, dict]:
    model, tokenizer = built
    model.to(dtype=dtypes["qwen"])
    folder = root / "qwen"
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return ({"path": str(folder)},
            {"route": "folder", "files": sorted(str(f) for f in folder.rglob("*.safetensors")),
             "dtype": _name(dtypes["qwen"])})


WRITERS: dict[str, Callable] = {"sdxl": _write_sdxl, "wan": _write_wan, "qwen": _write_qwen}


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_user_weights(family_names: list[str], root: Path | str, device: str | torch.device | None = None,
                       size: str = "full", precision: str = "hub",
                       log: Callable[[str], None] = lambda line: None) -> WrittenWeights:
    """Each family's model written under `root` as a user has it, and `root/models.yaml` naming
    the files. Built on `device` (a GPU when given: the full UMT5-XXL alone is 11-23 GB), written
    from there through the library savers, freed before the next family. A full disk is one
    DiskFull line naming the file; a family's partial files are removed."""
    from ourvidz.families.base import resolve_device
    from ourvidz.outputs import NO_SPACE, disk_full, atomic_replace

    if size not in SIZES:
        raise BadInput(f"size must be one of {', '.join(SIZES)} (got {size!r})")
    if precision not in PRECISIONS:
        raise BadInput(f"precision must be one of {', '.join(PRECISIONS)} (got {precision!r})")
    unknown = [f for f in family_names if f not in WRITERS]
    if unknown:
        raise BadInput(f"no user-format writer for {', '.join(unknown)}; known: {', '.join(WRITERS)}")
    dev = resolve_device(device)
    dtypes = PRECISIONS[precision]
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    written = WrittenWeights(models_file=root / "models.yaml")
    entries: dict[str, dict] = {}
    for family in family_names:
        build_dtype = dtypes["sdxl" if family == "sdxl" else family]
        t0 = time.perf_counter()
        try:
            with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
                built = _build(family, size, dev, build_dtype)
            t_built = time.perf_counter()
            entries[family], record = WRITERS[family](built, root, dtypes)
        except OSError as exc:
            shutil.rmtree(root / family, ignore_errors=True)
            if exc.errno in NO_SPACE:
                raise disk_full(exc, root / family) from None
            raise
        finally:
            built = None
            _free(dev)
        t_end = time.perf_counter()
        record |= {"size": size, "precision": precision, "bytes": _bytes_under(root / family),
                   "build_s": t_built - t0, "write_s": t_end - t_built}
        written.families[family] = record
        log(f"wrote   {family:24s} {record['bytes'] / 1e9:8.2f} GB as {record['route']} in {record['write_s']:.1f} s "
            f"(built in {record['build_s']:.1f} s)")
    # The models file in the format --models reads (JSON is YAML); nothing is fetched.
    atomic_replace(written.models_file, json.dumps({"allow_download": False, **entries}, indent=1).encode())
    atomic_replace(root / "written.json", json.dumps(written.to_dict(), indent=1).encode())
    return written


def drop_from_page_cache(paths) -> bool:
    """Ask the kernel to forget the files' cached pages (they are written and synced), so that the
    next read comes from the disk as after a reboot. True where the kernel took the advice."""
    if not hasattr(os, "posix_fadvise"):
        return False
    done = True
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ESPIPE, errno.EBADF):
                raise
            done = False
    return done
