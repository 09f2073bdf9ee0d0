"""Probe (issue #12): where a video job's time after the denoise goes, and what is left in the
transformer step, on the full-size architectures with random weights.

- Wan 2.1 VAE decode of 81 frames at 480x832 (fp32, as diffusers advises): the library's decode,
  ourvidz's chunked decode, and two candidate exact rewrites of its memory-bound parts (RMS norm +
  SiLU fused by torch.compile; the causal convolution's spatial zero-padding done by the
  convolution instead of an F.pad copy), plus bfloat16 as a lossy reference. Each: seconds and
  PSNR / max difference of the uint8 frames against the library's decode.
- H.264 (libx264 through PyAV) of the same 81 frames, and decode with the encoder on a thread
  (ourvidz.outputs.Mp4Stream) against decode-then-encode.
- The attention of one Wan 1.3B video forward (32,760 tokens, 12 heads of 128) through SDPA's
  cuDNN and flash backends: milliseconds and TFLOP/s; and a bf16 matmul for the card's rate.

    PYTHONPATH=/tmp/site:$PWD python3 research/probe_decode.py [--tiny]     # one JSON line per probe
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def emit(**row) -> None:
    print(json.dumps(row), flush=True)


def clock(fn, runs: int, dev) -> tuple[float, object]:
    out, times = None, []
    for _ in range(runs):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def fuse_norm_silu(vae) -> int:
    """Each Wan residual block's RMS norm and the SiLU after it as one compiled kernel."""
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanResidualBlock

    @torch.compile(dynamic=True)
    def norm_silu(x, gamma, scale: float):
        return F.silu(F.normalize(x, dim=1) * scale * gamma)

    n = 0
    for blk in vae.decoder.modules():
        if isinstance(blk, WanResidualBlock):
            for norm in (blk.norm1, blk.norm2):
                norm.forward = (lambda m: (lambda x: norm_silu(x, m.gamma, m.scale)))(norm)
            blk.nonlinearity = torch.nn.Identity()
            n += 1
    return n


def implicit_spatial_padding(vae) -> int:
    """ourvidz's vae_padding switch (the causal convolutions' spatial zero padding done by the
    convolution instead of an F.pad copy of the input): the number of convolutions rewritten."""
    from types import SimpleNamespace

    from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d

    from ourvidz.families.wan.speedups import vae_padding

    vae_padding(SimpleNamespace(pipe=SimpleNamespace(vae=vae)))
    return sum(1 for m in vae.modules() if isinstance(m, WanCausalConv3d) and "forward" in vars(m))


def decode_probe(dev, tiny: bool, runs: int) -> None:
    from diffusers import AutoencoderKLWan

    from ourvidz.families.wan.pipeline import decode_chunks
    from ourvidz.outputs import Mp4Stream, save_mp4

    def build(dtype=torch.float32):
        torch.manual_seed(0)
        kw = dict(base_dim=8, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1) if tiny else {}
        vae = AutoencoderKLWan(**kw).to(dev, dtype).eval()
        for m in vae.modules():  # what ourvidz's vae_layout switch does
            if isinstance(m, torch.nn.Conv3d):
                m.weight.data = m.weight.data.contiguous(memory_format=torch.channels_last_3d)
        return vae

    torch.backends.cudnn.benchmark = True
    h, w, t = (8, 12, 5) if tiny else (60, 104, 21)
    g = torch.Generator(device="cpu").manual_seed(1)
    z = torch.randn(1, 16, t, h, w, generator=g).to(dev)

    def to_frames(px):
        return (px[0].float().clamp(-1, 1) * 0.5 + 0.5).mul(255).round().to(torch.uint8).permute(1, 2, 3, 0).cpu().numpy()

    vae = build()
    with torch.inference_mode():
        s, ref = clock(lambda: to_frames(vae.decode(z, return_dict=False)[0]), runs, dev)
        emit(probe="vae_decode", variant="diffusers decode", seconds=s, frames=int(ref.shape[0]))
        s, out = clock(lambda: np.concatenate([to_frames(c) for c in decode_chunks(vae, z)]), runs, dev)
        emit(probe="vae_decode", variant="ourvidz chunked", seconds=s, psnr=psnr(out, ref),
             max_diff=int(np.abs(out.astype(int) - ref).max()))

        work = Path(tempfile.mkdtemp())
        s, _ = clock(lambda: save_mp4(work / f"a{time.monotonic_ns()}.mp4", ref, 16), runs, dev)
        emit(probe="h264", variant="81 frames, libx264 medium crf 18", seconds=s)

        def serial():
            frames = np.concatenate([to_frames(c) for c in decode_chunks(vae, z)])
            return save_mp4(work / f"b{time.monotonic_ns()}.mp4", frames, 16)

        def streamed():
            stream = Mp4Stream(work / f"c{time.monotonic_ns()}.mp4", 16)
            for c in decode_chunks(vae, z):
                stream.add(to_frames(c))
            return stream.close()
        s1, _ = clock(serial, runs, dev)
        s2, _ = clock(streamed, runs, dev)
        emit(probe="decode+h264", serial_s=s1, streamed_s=s2)

        n = fuse_norm_silu(vae)
        clock(lambda: [c for c in decode_chunks(vae, z)], 1, dev)  # compiles
        s, out = clock(lambda: np.concatenate([to_frames(c) for c in decode_chunks(vae, z)]), runs, dev)
        emit(probe="vae_decode", variant=f"fused norm+silu ({n} blocks)", seconds=s, psnr=psnr(out, ref),
             max_diff=int(np.abs(out.astype(int) - ref).max()))
        n = implicit_spatial_padding(vae)
        clock(lambda: [c for c in decode_chunks(vae, z)], 1, dev)
        s, out = clock(lambda: np.concatenate([to_frames(c) for c in decode_chunks(vae, z)]), runs, dev)
        emit(probe="vae_decode", variant=f"fused + implicit padding ({n} convs)", seconds=s, psnr=psnr(out, ref),
             max_diff=int(np.abs(out.astype(int) - ref).max()))
        vae2 = build()
        implicit_spatial_padding(vae2)
        clock(lambda: [c for c in decode_chunks(vae2, z)], 1, dev)
        s, out = clock(lambda: np.concatenate([to_frames(c) for c in decode_chunks(vae2, z)]), runs, dev)
        emit(probe="vae_decode", variant="implicit padding only", seconds=s, psnr=psnr(out, ref),
             max_diff=int(np.abs(out.astype(int) - ref).max()))
        del vae, vae2
        if dev.type == "cuda":
            vae = build(torch.bfloat16)
            zb = z.to(torch.bfloat16)
            clock(lambda: [c for c in decode_chunks(vae, zb)], 1, dev)
            s, out = clock(lambda: np.concatenate([to_frames(c) for c in decode_chunks(vae, zb)]), runs, dev)
            emit(probe="vae_decode", variant="bfloat16 (lossy reference)", seconds=s, psnr=psnr(out, ref),
                 max_diff=int(np.abs(out.astype(int) - ref).max()))


def attention_probe(dev) -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    a = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    s, _ = clock(lambda: a @ a, 10, dev)
    emit(probe="matmul", tflops=2 * 8192 ** 3 / s / 1e12)
    q, k, v = (torch.randn(1, 12, 32760, 128, device=dev, dtype=torch.bfloat16) for _ in range(3))
    flops = 4 * 32760 ** 2 * 128 * 12
    for name, backend in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION),
                          ("efficient", SDPBackend.EFFICIENT_ATTENTION)):
        try:
            with sdpa_kernel(backend):
                clock(lambda: F.scaled_dot_product_attention(q, k, v), 2, dev)
                s, _ = clock(lambda: F.scaled_dot_product_attention(q, k, v), 10, dev)
            emit(probe="attention", backend=name, ms=s * 1e3, tflops=flops / s / 1e12, per_forward_ms=30 * s * 1e3)
        except Exception as exc:  # noqa: BLE001 - a backend the card or build lacks
            emit(probe="attention", backend=name, error=str(exc).splitlines()[0][:200])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true", help="CPU smoke test on a small VAE")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    emit(probe="env", device=torch.cuda.get_device_name() if dev.type == "cuda" else "cpu", torch=torch.__version__)
    if dev.type == "cuda":
        attention_probe(dev)
    decode_probe(dev, args.tiny, args.runs if not args.tiny else 1)


if __name__ == "__main__":
    main()
