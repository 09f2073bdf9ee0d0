"""Reference images: the fetcher's limits (size, type, time, where from), the preparation rules
(exact copy, Wan reference modes refused at once), and SDXL image-to-image on the resident demo
SDXL components (from_pipe: the same modules, no second load)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from eras_servers import ImageServer, png_bytes
from ourvidz import reference
from ourvidz.errors import BadInput, ServiceError
from ourvidz.worker import payload
from ourvidz.worker.prepare import prepare, steps_running_one


@pytest.fixture(scope="module")
def images():
    server = ImageServer()
    gif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(gif, "GIF")
    server.httpd.files |= {"/a.gif": (gif.getvalue(), "image/gif"), "/text.png": (b"not an image", "image/png"),
                           "/big.png": (png_bytes((400, 400)), "image/png")}
    yield server
    server.stop()


def test_fetch_url_reads_and_records_a_masked_source(images):
    ref = reference.fetch(images.base + "/ref.png?token=s3cret")
    assert ref.format == "PNG" and ref.size == (96, 80) and ref.image.mode == "RGB" and len(ref.sha256) == 64
    assert "s3cret" not in ref.source and "token=***" in ref.source
    assert "s3cret" not in json.dumps(ref.to_dict())


@pytest.mark.parametrize("path, kind, words", [
    ("/a.gif", BadInput, "GIF is not one of PNG, JPEG, WEBP"),
    ("/text.png", BadInput, "not a readable image"),
    ("/missing.png", BadInput, "HTTP 404"),
])
def test_fetch_url_refuses_what_is_not_an_allowed_image(images, path, kind, words):
    with pytest.raises(kind, match=words):
        reference.fetch(images.base + path)


def test_fetch_limits_size_and_time(images):
    with pytest.raises(BadInput, match="the limit is 1000"):
        reference.fetch(images.base + "/big.png", max_bytes=1000)
    with pytest.raises(ServiceError, match="timed out|TimeoutError|not fetched within"):
        reference.fetch(images.base + "/slow.png", timeout=0.5)  # a retry may succeed: ServiceError is retryable


def test_local_paths_only_under_the_reference_root(tmp_path):
    (tmp_path / "refs").mkdir()
    (tmp_path / "refs" / "r.png").write_bytes(png_bytes())
    (tmp_path / "secret.png").write_bytes(png_bytes())
    with pytest.raises(BadInput, match="--reference-root"):
        reference.fetch(str(tmp_path / "refs" / "r.png"))
    assert reference.fetch("r.png", local_root=tmp_path / "refs").size == (96, 80)
    assert reference.fetch(str(tmp_path / "refs" / "r.png"), local_root=tmp_path / "refs").format == "PNG"
    with pytest.raises(BadInput, match="outside --reference-root"):
        reference.fetch("../secret.png", local_root=tmp_path / "refs")
    with pytest.raises(BadInput, match="only http"):
        reference.fetch("file:///etc/hostname")


def test_fitted_covers_and_centre_crops():
    ref = reference.Reference(image=Image.new("RGB", (200, 100)), source="x", sha256="", format="PNG",
                              size=(200, 100), nbytes=0)
    assert ref.fitted(64, 64).size == (64, 64) and ref.to_dict()["resized_to"] == "64x64"


def test_steps_running_one():
    assert steps_running_one(0.05, 6) == 20 and int(20 * 0.05) == 1
    assert steps_running_one(0.3, 2) == 4 and int(4 * 0.3) == 1
    assert steps_running_one(0.5, 25) == 25


def element(reference_url: str, **metadata) -> str:
    job = {"id": "i2i-1", "type": "sdxl_image_fast", "prompt": metadata.pop("prompt", "a red square"),
           "user_id": "u1", "config": {"pipeline": "img2img", "num_images": 1, "seed": 7},
           "metadata": {"reference_image_url": reference_url, **metadata}}
    return json.dumps([json.dumps(job)])


def test_exact_copy_plan_as_production(images, tmp_path):
    spec = payload.parse(element(images.base + "/ref.png", exact_copy_mode=True, denoise_strength=0.02, prompt=""))
    plan = prepare(spec, out_dir=tmp_path / "o", presets_dir=None, counter=None, demo=True, reference_root=None)
    assert plan.prompt == "" and plan.preset.guidance == 1.0 and plan.preset.steps == 50  # 1 step at 0.02
    assert plan.negative.text == "" and plan.reference.mode == "exact_copy" and plan.reference.denoise_strength == 0.02
    assert plan.to_dict()["reference"]["source"].startswith(images.base)


def test_img2img_needs_a_prompt_and_a_sane_strength(images, tmp_path):
    spec = payload.parse(element(images.base + "/ref.png", prompt=""))
    with pytest.raises(BadInput, match="prompt is empty"):
        prepare(spec, out_dir=tmp_path, presets_dir=None, counter=None, demo=True, reference_root=None)
    spec = payload.parse(element(images.base + "/ref.png", denoise_strength=1.5))
    with pytest.raises(BadInput, match=r"denoise_strength must be in \(0, 1\]"):
        prepare(spec, out_dir=tmp_path, presets_dir=None, counter=None, demo=True, reference_root=None)


@pytest.mark.parametrize("config, mode", [({"first_frame": "https://h/a.png"}, "wan_start_frame"),
                                          ({"last_frame": "https://h/b.png"}, "wan_end_frame"),
                                          ({"first_frame": "https://h/a.png", "last_frame": "https://h/b.png"},
                                           "wan_start_end"),
                                          ({"image": "https://h/a.png"}, "wan_start_frame")])
def test_wan_reference_modes_fail_at_once_naming_the_mode(tmp_path, config, mode):
    raw = json.dumps({"id": "w1", "type": "video_fast", "prompt": "a boat", "user_id": "u", "config": config})
    spec = payload.parse(raw)
    with pytest.raises(BadInput, match=f"reference mode {mode} .*refused") as exc:  # before any fetch or load
        prepare(spec, out_dir=tmp_path, presets_dir=None, counter=None, demo=True, reference_root=None)
    assert exc.value.retryable is False


def test_sdxl_img2img_reuses_the_resident_components(images, tmp_path):
    from ourvidz.job import run_job
    from ourvidz.model_cache import ModelCache

    cache = ModelCache(demo=True, device="cpu")
    sdxl, _ = cache.get("sdxl")
    spec = payload.parse(element(images.base + "/ref.png", denoise_strength=0.5))
    spec.overrides = spec.overrides.merged({"steps": 4})
    plan = prepare(spec, out_dir=tmp_path / "a", presets_dir=None, counter=None, demo=True, reference_root=None)
    result = run_job(plan, cache)
    i2i = sdxl.img2img_pipe()
    assert type(i2i).__name__ == "StableDiffusionXLImg2ImgPipeline"
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        assert getattr(i2i, name) is getattr(sdxl.pipe, name)  # shared: no second load
    assert sdxl.img2img_pipe() is i2i
    png = next(p for p in result.files if p.suffix == ".png")
    sidecar = json.loads(png.with_suffix(".json").read_text())
    assert sidecar["plan"]["reference"]["mode"] == "img2img" and sidecar["plan"]["reference"]["resized_to"] == "64x64"
    assert result.report is not None
    # the same job again gives the same pixels (seeded); a different reference gives different ones
    again = run_job(prepare(spec, out_dir=tmp_path / "b", presets_dir=None, counter=None, demo=True,
                            reference_root=None), cache)
    b = next(p for p in again.files if p.suffix == ".png")
    assert np.array_equal(np.asarray(Image.open(png)), np.asarray(Image.open(b)))
    images.httpd.files["/blue.png"] = (png_bytes(color=(10, 10, 230)), "image/png")
    other = run_job(prepare(_with_steps(payload.parse(element(images.base + "/blue.png", denoise_strength=0.5)), 4),
                            out_dir=tmp_path / "c", presets_dir=None, counter=None, demo=True, reference_root=None), cache)
    c = next(p for p in other.files if p.suffix == ".png")
    assert not np.array_equal(np.asarray(Image.open(png)), np.asarray(Image.open(c)))


def _with_steps(spec, steps):
    spec.overrides = spec.overrides.merged({"steps": steps})
    return spec
