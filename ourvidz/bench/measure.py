"""What the bench measures with: medians, the card's matmul rate (the arithmetic floor), a job's
pixels read back from its files, and PSNR between two runs' pixels."""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch

from ourvidz.families.base import sync


def stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


def card_matmul_tflops(device: torch.device) -> float | None:
    """The card's dense bf16 rate, measured now: the floor is arithmetic at this rate."""
    if device.type != "cuda":
        return None
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(20):
        a @ b
    sync(device)
    return 20 * 2 * 8192**3 / (time.perf_counter() - t0) / 1e12


def pixels_of(result) -> np.ndarray:
    from PIL import Image

    images = [Image.open(f) for f in result.files if f.suffix == ".png"]
    if images:
        return np.stack([np.asarray(im.convert("RGB")) for im in images])
    from ourvidz.outputs import read_video_frames

    return read_video_frames(next(f for f in result.files if f.suffix == ".mp4"))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)
