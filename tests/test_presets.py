import pytest

from ourvidz.errors import BadInput
from ourvidz.presets import job_types, load_all, load_preset

# The values of ../shared/spec/job-types.md.
SPEC = {
    "sdxl_image_fast": ("sdxl", 1024, 1024, 15, 6.0, 1, 6, "png", False, 29.9, "measured"),
    "sdxl_image_high": ("sdxl", 1024, 1024, 25, 7.5, 1, 6, "png", False, 42.4, "measured"),
    "image_fast": ("wan", 480, 832, 25, 6.5, 1, 1, "png", False, 73, "expected"),
    "image_high": ("wan", 480, 832, 50, 7.5, 1, 1, "png", False, 90, "expected"),
    "video_fast": ("wan", 480, 832, 25, 6.5, 81, 1, "mp4", False, 251.5, "measured"),
    "video_high": ("wan", 480, 832, 50, 7.5, 81, 1, "mp4", False, 359.7, "measured"),
    "image7b_fast_enhanced": ("wan", 480, 832, 25, 6.5, 1, 1, "png", True, 233.5, "measured"),
    "image7b_high_enhanced": ("wan", 480, 832, 50, 7.5, 1, 1, "png", True, 104, "expected"),
    "video7b_fast_enhanced": ("wan", 480, 832, 25, 6.5, 81, 1, "mp4", True, 263.9, "measured"),
    "video7b_high_enhanced": ("wan", 480, 832, 50, 7.5, 81, 1, "mp4", True, 370.0, "measured"),
}


def test_ten_job_types():
    assert sorted(job_types()) == sorted(SPEC)


@pytest.mark.parametrize("name", sorted(SPEC))
def test_preset_values_match_spec(name):
    p = load_preset(name)
    fam, w, h, steps, cfg, frames, images, output, enhance, secs, status = SPEC[name]
    assert (p.family, p.width, p.height, p.steps, p.guidance, p.frames, p.num_images, p.output, p.enhance) == (
        fam, w, h, steps, cfg, frames, images, output, enhance)
    assert (p.seed_doc.seconds, p.seed_doc.status) == (secs, status)
    if fam == "wan":
        assert p.scheduler == "unipc" and p.flow_shift == 5.0
        assert p.negative_strategy == ("wan_video" if output == "mp4" else "wan_image")
        if output == "mp4":
            assert p.fps == 16
    else:
        assert p.scheduler == "euler" and p.negative_strategy == "sdxl"


def test_fast_jobs_first():
    order = [p.name for p in load_all()]
    assert order.index("sdxl_image_fast") < order.index("sdxl_image_high")
    assert order.index("video_fast") < order.index("video_high")
    assert order.index("image_fast") < order.index("video_fast")


GOOD = "family: wan\nwidth: 480\nheight: 832\nsteps: 25\nguidance: 6.5\nscheduler: unipc\nflow_shift: 5.0\noutput: png\nnegative_strategy: wan_image\n"


@pytest.mark.parametrize("change, field, rule", [
    (("width: 480", "width: 500"), "width", "multiple of 16"),
    (("steps: 25", "steps: 0"), "steps", "greater than or equal to 1"),
    (("guidance: 6.5", "guidance: -1"), "guidance", "greater than or equal to 0"),
    (("output: png", "output: mp4\nframes: 80\nfps: 16"), "frames", "4k+1"),
    (("output: png", "output: png\nnum_images: 0"), "num_images", "greater than or equal to 1"),
    (("output: png", "output: png\nbogus: 3"), "bogus", "unknown field"),
    (("scheduler: unipc", "scheduler: euler"), "scheduler", "unipc"),
    (("output: png", "output: mp4\nframes: 81"), "fps", "needs fps"),
])
def test_malformed_preset_names_file_field_rule(tmp_path, change, field, rule):
    (tmp_path / "mine.yaml").write_text(GOOD.replace(*change))
    with pytest.raises(BadInput) as exc:
        load_preset("mine", tmp_path)
    msg = str(exc.value)
    assert "mine.yaml" in msg and f"'{field}'" in msg and rule in msg and "\n" not in msg


def test_sdxl_sizes_multiple_of_8(tmp_path):
    sdxl = "family: sdxl\nwidth: 1020\nheight: 1024\nsteps: 2\nguidance: 5\nscheduler: euler\noutput: png\nnegative_strategy: sdxl\n"
    (tmp_path / "s.yaml").write_text(sdxl)
    with pytest.raises(BadInput, match="multiple of 8"):
        load_preset("s", tmp_path)
    (tmp_path / "s.yaml").write_text(sdxl.replace("1020", "1016"))
    assert load_preset("s", tmp_path).width == 1016


def test_user_presets_search_path(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "image_fast.yaml").write_text(GOOD.replace("steps: 25", "steps: 3"))
    (b / "image_fast.yaml").write_text(GOOD.replace("steps: 25", "steps: 4"))
    (b / "mine.yaml").write_text(GOOD)
    monkeypatch.setenv("OURVIDZ_PRESETS", str(b))
    assert load_preset("image_fast").steps == 4  # env before built-in
    assert load_preset("image_fast", a).steps == 3  # --presets-dir before env
    assert "mine" in job_types() and len(job_types()) == 11


def test_overrides_revalidated():
    p = load_preset("video_fast")
    assert p.with_overrides({"steps": 4, "frames": 5}).frames == 5
    with pytest.raises(BadInput, match="--frames"):
        p.with_overrides({"frames": 6})
    with pytest.raises(BadInput, match="--width.*multiple of 16"):
        p.with_overrides({"width": 100})
    with pytest.raises(BadInput, match="cannot override"):
        p.with_overrides({"family": "sdxl"})


def test_malformed_yaml(tmp_path):
    (tmp_path / "x.yaml").write_text("family: [wan\n")
    with pytest.raises(BadInput, match=r"x.yaml: line \d+: malformed YAML"):
        load_preset("x", tmp_path)
