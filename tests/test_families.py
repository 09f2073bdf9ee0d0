"""The family registry (ourvidz.families) and what the families' pipelines share (families.base).

Everything ourvidz knows about a model family is declared once, in families/<name>/; these tests
keep it that way: every preset names a registered generator, every declared reference resolves,
a new family is data, and no module outside families/ spells a family's name."""

import ast
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import JOB_TYPES, REPO

from ourvidz import families
from ourvidz.datafiles import builtin_presets_dir
from ourvidz.presets import load_preset

NAMES = ("sdxl", "wan", "qwen")


# ------------------------------------------------------------------ the registry
def test_registry_holds_the_three_families():
    assert set(families.names()) == set(NAMES)
    assert set(families.generators()) == {"sdxl", "wan"} and families.ENHANCER == "qwen"
    assert all(families.get(n).name == n for n in families.names())
    with pytest.raises(Exception, match="unknown model family 'flux'"):
        families.get("flux")


@pytest.mark.parametrize("job_type", JOB_TYPES)
def test_every_presets_family_is_a_registered_generator(job_type):
    preset = load_preset(job_type)
    family = families.get(preset.family)
    assert preset.family in families.generators() and family.role == "generator"
    assert preset.scheduler in family.schedulers and preset.sampler.startswith(family.schedulers[preset.scheduler])
    assert families.queues()[preset.family] == family.queue


@pytest.mark.parametrize("name", NAMES)
def test_each_familys_references_resolve(name):
    family = families.get(name)
    pipeline, random_class, build = family.pipeline_class(), family.random_class(), family.build_demo_function()
    assert isinstance(pipeline, type) and callable(pipeline.load)
    assert isinstance(random_class, type) and callable(random_class.load)
    assert callable(build) and "folder" in build.__code__.co_varnames[:build.__code__.co_argcount]
    switches = family.speedup_switches()
    assert isinstance(switches, dict) and all(callable(f) for f in switches.values())
    from ourvidz.speedups import SWITCHES

    assert set(switches) <= set(SWITCHES)  # a family's switches are among the global ones
    assert family.components and family.hub_id and family.marker_file


def test_adding_a_family_is_data(monkeypatch, tmp_path):
    """A new family registered under a new name is a generator, gets its queue and may be named by
    a preset: nothing else needs to change."""
    from ourvidz.worker import keys

    new = dataclasses.replace(families.get("wan"), name="wan22", title="Wan 2.2", queue="wan22_queue")
    monkeypatch.setitem(families.FAMILIES, "wan22", new)
    assert "wan22" in families.generators() and "wan22" in families.names()
    assert families.get("wan22") is new and keys.queue_for("wan22") == "wan22_queue"
    preset_text = (builtin_presets_dir() / "image_fast.yaml").read_text()
    assert "family: wan\n" in preset_text
    (tmp_path / "mine.yaml").write_text(preset_text.replace("family: wan\n", "family: wan22\n"))
    assert load_preset("mine", tmp_path).family == "wan22"
    monkeypatch.delitem(families.FAMILIES, "wan22")
    assert "wan22" not in families.generators()
    with pytest.raises(Exception, match="family"):
        load_preset("mine", tmp_path)


# ------------------------------------------------------------------ no family name outside families/
# Quoted family names that may stay outside ourvidz/families/: (file, the stripped line). Anything
# else is a definition creeping back: declare it in the family's folder and ask the registry.
ALLOWED = {
    # a negative-prompt strategy called sdxl (negatives.yaml), not the family
    ("ourvidz/presets.py", 'negative_strategy: Literal["sdxl", "wan_image", "wan_video"]'),
    # table column headers: whether a job runs the prompt enhancer
    ("ourvidz/views.py", 'for col in ("job type", "family", "size", "steps", "cfg", "frames", "images", "qwen", "seed doc"):'),
    ("ourvidz/views.py", 'table.add_column(col, justify="left" if col in ("job type", "family", "qwen") else "right", no_wrap=True)'),
    ("ourvidz/views.py", 'for col in ("#", "job", "family", "qwen", "priority", "state", "seed", "prompt"):'),
}


def quoted_family_names(root: Path = REPO) -> set[tuple[str, str]]:
    """(file, stripped line) of every string constant equal to a family name in ourvidz/**/*.py
    outside ourvidz/families/ (docstrings and comments do not count: they are not str constants
    equal to a bare name)."""
    found = set()
    for path in sorted((root / "ourvidz").rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith("ourvidz/families/"):
            continue
        source = path.read_text(encoding="utf-8")
        lines = source.splitlines()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Constant) and node.value in NAMES:
                found.add((rel, lines[node.lineno - 1].strip()))
    return found


def test_family_names_are_spelled_only_in_families():
    found = quoted_family_names()
    print("quoted family names outside ourvidz/families/ (allowed):", *sorted(found & ALLOWED), sep="\n  ")
    assert found - ALLOWED == set(), "a family name outside ourvidz/families/: declare it in the registry"


def test_the_family_name_check_can_fail(tmp_path):
    """The check above sees a family name creeping back (here in a module written for the test),
    and not one inside families/."""
    (tmp_path / "ourvidz" / "families" / "wan").mkdir(parents=True)
    (tmp_path / "ourvidz" / "creep.py").write_text('QUEUE = {"wan": "wan_queue"}  # "sdxl" in a comment\n')
    (tmp_path / "ourvidz" / "families" / "wan" / "__init__.py").write_text('NAME = "wan"\n')
    assert quoted_family_names(tmp_path) == {("ourvidz/creep.py", 'QUEUE = {"wan": "wan_queue"}  # "sdxl" in a comment')}


# ------------------------------------------------------------------ what the families' pipelines share
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_bytes_made_on_the_device_equal_the_processors(dtype):
    """The decode's to_uint8 must give exactly the bytes of diffusers' own postprocess."""
    from diffusers.image_processor import VaeImageProcessor
    from diffusers.video_processor import VideoProcessor

    from ourvidz.families.base import to_uint8

    x = (torch.randn(2, 3, 16, 24, generator=torch.Generator().manual_seed(0)) * 1.3).to(dtype)
    pil = VaeImageProcessor().postprocess(x, output_type="pil")
    assert np.array_equal(to_uint8(x, VaeImageProcessor()).permute(0, 2, 3, 1).numpy(), np.stack([np.asarray(im) for im in pil]))
    video = x.float().permute(1, 0, 2, 3)[None]  # [1, 3, F, H, W], as the Wan VAE returns it
    frames = VideoProcessor().postprocess_video(video, output_type="np")[0]
    reference = (np.clip(frames, 0, 1) * 255).round().astype(np.uint8)
    assert np.array_equal(to_uint8(video[0], VideoProcessor()).permute(1, 2, 3, 0).numpy(), reference)
