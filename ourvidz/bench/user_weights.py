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

PRECISIONS = ("hub", "half")  # each family's build.py: USER_DTYPES (hub: as its hub repository ships)
SIZES = ("full", "demo")


@dataclass
class WrittenWeights:
    """What write_user_weights wrote: the models file and, per family, its files, route, dtypes,
    bytes and seconds to build and write."""
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


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


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
    writers = {n: f for n, f in families.FAMILIES.items() if f.user_files}
    unknown = [f for f in family_names if f not in writers]
    if unknown:
        raise BadInput(f"no user-format writer for {', '.join(unknown)}; known: {', '.join(writers)}")
    dev = resolve_device(device)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    written = WrittenWeights(models_file=root / "models.yaml")
    entries: dict[str, dict] = {}
    for family in family_names:
        t0 = time.perf_counter()
        try:  # builds, writes and drops the model: nothing of it outlives the call
            entries[family], record = writers[family].user_files_function()(root / family, size, dev, precision)
        except OSError as exc:
            shutil.rmtree(root / family, ignore_errors=True)
            if exc.errno in NO_SPACE:
                raise disk_full(exc, root / family) from None
            raise
        finally:
            _free(dev)
        record |= {"size": size, "precision": precision, "bytes": _bytes_under(root / family),
                   "write_s": time.perf_counter() - t0}
        written.families[family] = record
        log(f"wrote   {family:24s} {record['bytes'] / 1e9:8.2f} GB as {record['route']} in {record['write_s']:.1f} s "
            "(build and write)")
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
