"""A video's H.264 encoding runs beside its VAE decode: the Wan decode hands out chunks of frames
as it makes them (ourvidz.families.wan.pipeline.decode_chunks) and outputs.Mp4Stream encodes
them on a thread. Same pixels, same file, nothing half-made left behind."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ourvidz.outputs import Mp4Stream, read_video_frames, read_video_info, read_video_tags, save_mp4


@pytest.fixture(scope="module")
def wan():
    from ourvidz.model_cache import ModelCache

    model, _ = ModelCache(demo=True, device="cpu").get("wan")
    return model


def _latents(model, frames: int = 9) -> torch.Tensor:
    vae = model.pipe.vae
    t = (frames - 1) // model.pipe.vae_scale_factor_temporal + 1
    g = torch.Generator().manual_seed(7)
    return torch.randn(1, vae.config.z_dim, t, 4, 6, generator=g)


def test_chunked_decode_equals_the_library_decode(wan):
    from ourvidz.families.base import to_uint8

    latents = _latents(wan)
    vae = wan.pipe.vae
    z = vae.config.z_dim
    mean = torch.tensor(vae.config.latents_mean).view(1, z, 1, 1, 1)
    inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, z, 1, 1, 1)
    with torch.inference_mode():
        whole = vae.decode(latents / inv_std + mean, return_dict=False)[0]
        expected = to_uint8(whole[0], wan.pipe.video_processor).permute(1, 2, 3, 0).numpy()
        seen: list[np.ndarray] = []
        video = wan.decode(latents, on_frames=seen.append)
    assert video.shape == expected.shape and video.shape[0] == 9
    assert np.array_equal(video, expected)
    assert [len(c) for c in seen] == [1, 4, 4]  # one frame, then four per latent frame
    assert np.array_equal(np.concatenate(seen), video)


def test_stream_in_chunks_equals_one_piece(tmp_path):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, size=(9, 32, 48, 3), dtype=np.uint8)
    whole = save_mp4(tmp_path / "whole.mp4", frames, 16, comment="Steps: 2", metadata={"title": "t"})
    stream = Mp4Stream(tmp_path / "parts.mp4", 16, comment="Steps: 2", metadata={"title": "t"})
    for chunk in (frames[:1], frames[1:5], frames[5:]):
        stream.add(chunk)
    progress: list[tuple[int, int]] = []
    parts = stream.close(on_frame=lambda done, total: progress.append((done, total)))
    assert whole.read_bytes() == parts.read_bytes()
    assert read_video_info(parts)["frames"] == 9 and read_video_tags(parts)["comment"] == "Steps: 2"
    assert progress[-1] == (9, 9)
    assert np.array_equal(read_video_frames(parts), read_video_frames(whole))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["parts.mp4", "whole.mp4"]  # no temp folder left


def test_abort_leaves_nothing(tmp_path):
    stream = Mp4Stream(tmp_path / "v.mp4", 16)
    stream.add(np.zeros((4, 16, 16, 3), np.uint8))
    stream.abort()
    stream.abort()  # twice is harmless
    assert list(tmp_path.iterdir()) == []


def test_encoder_error_reaches_the_caller_and_leaves_nothing(tmp_path):
    stream = Mp4Stream(tmp_path / "v.mp4", 16)
    stream.add(np.zeros((2, 16, 16, 3), np.uint8))
    stream.add(np.zeros((2, 16, 16), np.uint8))  # not RGB: PyAV refuses it on the encoder thread
    with pytest.raises(Exception):
        stream.close()
    assert list(tmp_path.iterdir()) == []


def test_video_job_streams_and_a_failed_decode_leaves_no_mp4(tmp_path, monkeypatch):
    from conftest import ok, one_error_line, run

    from ourvidz.families.wan.pipeline import WanFamily

    ok("generate", "video_fast", "a boat at dawn", "--demo", "--steps", 1, "--frames", 9, "--seed", 2,
       "--out", tmp_path / "a")
    import json

    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert report["phases"]["encode_mp4"] > 0 and read_video_info(tmp_path / "a" / "video.mp4")["frames"] == 9

    real = WanFamily.decode

    def decode(self, latents, on_frames=None):  # streams the first chunk, then fails
        def first_then_fail(frames):
            on_frames(frames)
            raise RuntimeError("decoder exploded")
        return real(self, latents, first_then_fail)

    monkeypatch.setattr(WanFamily, "decode", decode)
    line = one_error_line(run("generate", "video_fast", "a boat at dawn", "--demo", "--steps", 1, "--frames", 9,
                              "--out", tmp_path / "b"), 6)
    assert "decoder exploded" in line
    left = [p.name for p in (tmp_path / "b").rglob("*")] if (tmp_path / "b").exists() else []
    assert not [n for n in left if n.endswith(".mp4") or n.startswith(".ourvidz-mp4")]


def test_vae_padding_switch_gives_the_same_frames(wan):
    import copy

    from ourvidz.families.wan.speedups import vae_padding

    latents = _latents(wan)
    padded = copy.copy(wan)
    padded.pipe = copy.copy(wan.pipe)
    padded.pipe.vae = copy.deepcopy(wan.pipe.vae)
    assert vae_padding(padded)
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d

    convs = [m for m in padded.pipe.vae.modules() if isinstance(m, WanCausalConv3d)]
    assert convs and all("forward" in vars(m) for m in convs)  # every causal conv rewritten
    with torch.inference_mode():
        assert np.array_equal(padded.decode(latents), wan.decode(latents))


def test_report_says_how_old_the_process_was_at_the_job(tmp_path):
    import json
    import time

    from conftest import ok

    from ourvidz.report import process_age_s

    age = process_age_s()
    assert age is not None and 0 < age < time.monotonic() + 1
    ok("generate", "image_fast", "a fox", "--demo", "--steps", 1, "--out", tmp_path)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["process_age_at_start_s"] >= age


def test_batch_of_videos_closes_each_stream_in_the_background_tail(tmp_path):
    import io

    import yaml
    from rich.console import Console

    from ourvidz.batch import run_batch

    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(yaml.safe_dump([{"job_type": "video_fast", "prompt": p, "seed": i,
                                     "overrides": {"steps": 1, "frames": 5}}
                                    for i, p in enumerate(["a boat", "a kite"])], sort_keys=False))
    run_batch(jobs, tmp_path / "out", demo=True, console=Console(file=io.StringIO(), width=200), keep_order=True)
    videos = sorted((tmp_path / "out").rglob("*.mp4"))
    assert len(videos) == 2 and all(read_video_info(v)["frames"] == 5 for v in videos)
    assert not list((tmp_path / "out").rglob(".ourvidz-mp4-*"))  # no encoder folder left behind
    import json

    reports = [json.loads((v.parent / "report.json").read_text()) for v in videos]
    assert all(r["phases"]["encode_mp4"] > 0 for r in reports)
    assert "tail_concurrent_seconds" in reports[0]  # the first tail ran in the background writer
