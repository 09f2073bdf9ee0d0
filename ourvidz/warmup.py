"""What a one-job process can start while Python is still importing torch and diffusers (about
ten seconds on the H200 host, most of a cold start's overhead): the weights' pages read from disk
into the page cache, and CUDA's start. Both run on daemon threads and only ever save time: a
failure is left for the real load to meet and report."""

from __future__ import annotations

import os
import threading
from pathlib import Path

PREFETCH_CHUNK = 64 << 20
_STARTED: set = set()  # the CUDA devices whose start is under way
_STARTED_LOCK = threading.Lock()


def weight_files(sources: dict, needed: list[str]) -> list[Path]:
    """The local weight files of the needed families (a single file; a folder's safetensors)."""
    from ourvidz.families.weights import weight_files as files_of

    return [f for family in needed if (source := sources.get(family)) is not None
            and source.kind in ("single_file", "folder")  # demo models are built, hub ids resolved by the loader
            for f in files_of(Path(source.path).expanduser())]


def prefetch(files: list[Path]) -> threading.Thread | None:
    """Ask the kernel to read the files ahead (posix_fadvise WILLNEED), one after the other, on a
    thread: a checkpoint that is not in the page cache then loads from memory, not from disk."""
    if not files or not hasattr(os, "posix_fadvise"):
        return None

    def read_ahead() -> None:
        for path in files:
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            try:
                size = os.fstat(fd).st_size
                for offset in range(0, size, PREFETCH_CHUNK):  # chunks: the kernel caps one request
                    os.posix_fadvise(fd, offset, PREFETCH_CHUNK, os.POSIX_FADV_WILLNEED)
            except OSError:
                pass
            finally:
                os.close(fd)

    thread = threading.Thread(target=read_ahead, name="ourvidz-prefetch", daemon=True)
    thread.start()
    return thread


def start_cuda(device: str | None) -> None:
    """Start CUDA (the device context, the cuBLAS handle: a second or two) on a thread, while the
    main thread goes on importing what does not need it, or reads weights; a no-op without a CUDA
    device. torch itself is imported here, in the caller's thread: a second thread importing torch
    while the main thread imports it can see a half-made module and abort the process."""
    import torch

    if device is not None and not str(device).startswith("cuda"):
        return
    if not torch.cuda.is_available():
        return
    dev = torch.device(device or "cuda")
    dev = torch.device("cuda", dev.index or 0)  # plain "cuda" is device 0 (asking torch would start CUDA here)
    with _STARTED_LOCK:  # once a device: the generate command's head start and the model cache both ask
        if dev in _STARTED:
            return
        _STARTED.add(dev)

    def start() -> None:
        try:
            with torch.cuda.device(dev):
                x = torch.ones(64, 64, device=dev, dtype=torch.bfloat16)
                (x @ x).sum().item()
        except Exception:  # noqa: BLE001 - only a head start; the job reports real failures
            pass

    threading.Thread(target=start, name="ourvidz-cuda-start", daemon=True).start()
