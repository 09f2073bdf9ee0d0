"""--gpus N with one-frame Wan jobs: they do not scale (0.99x measured on 2 GPUs), so they are
planned on one GPU (the family's parallel_min_frames); video and SDXL still spread."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ok
from ourvidz.distributed import ParallelContext, ParallelPlan, parallel_generate, split_for_good
from ourvidz.families.base import GenerationOutput, GenerationRequest
from ourvidz.plan import one_gpu_reason
from ourvidz.presets import load_preset


def test_one_frame_wan_plans_on_one_rank_video_and_sdxl_on_all():
    assert ParallelPlan.make(2, "wan", frames=1) == ParallelPlan(2, "wan", solo=True)
    assert ParallelPlan.make(2, "wan", frames=1).describe() == "rank 0 alone of 2 ranks"
    assert ParallelPlan.make(1, "wan", frames=1) == ParallelPlan.make(1, "wan")  # one GPU: nothing to decide
    video = ParallelPlan.make(2, "wan", frames=81)
    assert not video.solo and video.cfg_degree == 2 and video == ParallelPlan.make(2, "wan")
    assert ParallelPlan.make(4, "wan", frames=5).cp_degree == 2
    assert ParallelPlan.make(2, "sdxl", frames=1).image_split == 2


def test_the_reason_comes_from_the_registry():
    for job in ("image_fast", "image_high", "image7b_fast_enhanced"):
        why = one_gpu_reason(load_preset(job), 2)
        assert why.startswith("ran on 1 of 2 GPUs: a one-frame Wan job") and "\n" not in why
        assert one_gpu_reason(load_preset(job), 1) is None
    assert one_gpu_reason(load_preset("video_fast"), 2) is None
    assert one_gpu_reason(load_preset("sdxl_image_fast"), 4) is None


class NoModel:
    """A Wan model whose generate records the call (parallel_generate's solo branch)."""

    family = "wan"

    def __init__(self):
        self.pipe = type("Pipe", (), {"transformer": None})()
        self.calls = []

    def generate(self, req, on_step=None, parallel=None):
        self.calls.append(parallel)
        return GenerationOutput(phases={"denoise": 1.0})


def test_parallel_generate_runs_a_one_frame_job_on_rank_zero_alone():
    req = GenerationRequest(prompt="x", negative_prompt="", width=32, height=32, steps=2, guidance=5.0, seeds=[1])
    main, other = NoModel(), NoModel()
    assert parallel_generate(main, req, None, ParallelContext(0, 2, 0, torch.device("cpu"))).phases == {"denoise": 1.0}
    assert parallel_generate(other, req, None, ParallelContext(1, 2, 1, torch.device("cpu"))).phases == {}
    assert main.calls == [None] and other.calls == []  # rank 0: the one-process path; rank 1: nothing


def test_a_transformer_split_for_context_parallelism_stays_split():
    t = torch.nn.Linear(2, 2)
    assert not split_for_good(t) and not split_for_good(None)
    t._ourvidz_cp = ParallelPlan.make(2, "wan")  # cfg 2 x 1: no collectives inside the call
    assert not split_for_good(t)
    t._ourvidz_cp = ParallelPlan.make(4, "wan")  # cfg 2 x ulysses 2
    assert split_for_good(t)


def test_generate_gpus_2_one_frame_runs_in_one_process(tmp_path, monkeypatch):
    """`generate image_fast --gpus 2`: no ranks are started (the launcher would fail here), the
    pixels are the one-process run's and the report says why."""
    import ourvidz.ranks

    def no_launch(*args, **kwargs):
        raise AssertionError("ranks started for a one-frame job")

    monkeypatch.setattr(ourvidz.ranks, "launch", no_launch)
    common = ["image_fast", "a cat on a roof", "--demo", "--steps", "2", "--seed", "3", "--device", "cpu"]
    ok("generate", *common, "--out", tmp_path / "one")
    ok("generate", *common, "--out", tmp_path / "two", "--gpus", "2")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "one" / "image-00.png")),
                          np.asarray(Image.open(tmp_path / "two" / "image-00.png")))
    (note,) = json.loads((tmp_path / "two" / "report.json").read_text())["notes"]
    assert note.startswith("ran on 1 of 2 GPUs")
    assert "notes" not in json.loads((tmp_path / "one" / "report.json").read_text())


# ---- two gloo ranks (module level: spawned ranks import them by name)
def batch_on_ranks(ctx: ParallelContext, out):
    from ourvidz.model_cache import ModelCache
    from ourvidz.overrides import Overrides
    from ourvidz.plan import plan_job
    from ourvidz.ranks import RankJobs

    torch.set_num_threads(1)
    jobs, cache = RankJobs(ctx), ModelCache(demo=True, device="cpu")
    if not ctx.is_main:
        (out / f"followed-{ctx.rank}").write_text(str(jobs.follow(cache)))
        return None
    try:
        results = [jobs.run(plan_job(job, "a lighthouse in a storm", overrides=Overrides(steps=2, frames=frames),
                                     seed=5, out_dir=out / job, demo=True), cache)
                   for job, frames in (("image_fast", None), ("video_fast", 5))]
    finally:
        jobs.close()
    return [r.report.get("notes") for r in results]


@pytest.mark.slow
def test_on_two_ranks_a_one_frame_job_runs_on_rank_zero_and_a_video_on_both(tmp_path):
    from ourvidz.distributed import launch

    notes = launch(2, batch_on_ranks, tmp_path, device_type="cpu")
    assert notes[0][0].startswith("ran on 1 of 2 GPUs") and notes[1] is None
    assert (tmp_path / "followed-1").read_text() == "1"  # rank 1 took part in the video only
    one = tmp_path / "one"
    batch_on_ranks(ParallelContext(0, 1, 0, torch.device("cpu")), one)
    for job in ("image_fast",):
        png = [f for f in os.listdir(one / job) if f.endswith(".png")][0]
        assert np.array_equal(np.asarray(Image.open(one / job / png)), np.asarray(Image.open(tmp_path / job / png)))
