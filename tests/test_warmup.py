"""A one-job process's head start (ourvidz.warmup): weights read ahead while Python imports."""

from __future__ import annotations

from ourvidz import warmup
from ourvidz.families.weights import ModelSource


def test_weight_files_lists_single_files_and_folder_safetensors(tmp_path):
    ckpt = tmp_path / "model.safetensors"
    ckpt.write_bytes(b"x" * 10)
    folder = tmp_path / "wan"
    (folder / "transformer").mkdir(parents=True)
    (folder / "transformer" / "a.safetensors").write_bytes(b"y")
    (folder / "transformer" / "config.json").write_text("{}")
    sources = {"sdxl": ModelSource("sdxl", "single_file", str(ckpt)),
               "wan": ModelSource("wan", "folder", str(folder)),
               "qwen": ModelSource("qwen", "hub", "Qwen/Qwen2.5-7B-Instruct")}
    assert warmup.weight_files(sources, ["sdxl", "wan", "qwen"]) == [ckpt, folder / "transformer" / "a.safetensors"]
    assert warmup.weight_files(sources, ["wan"]) == [folder / "transformer" / "a.safetensors"]
    assert warmup.weight_files({"sdxl": ModelSource("sdxl", "demo", "demo")}, ["sdxl"]) == []


def test_prefetch_reads_ahead_and_survives_missing_files(tmp_path):
    ckpt = tmp_path / "model.safetensors"
    ckpt.write_bytes(b"x" * (3 * warmup.PREFETCH_CHUNK // 2))
    thread = warmup.prefetch([tmp_path / "gone.safetensors", ckpt])
    assert thread is not None
    thread.join(10)
    assert not thread.is_alive()
    assert warmup.prefetch([]) is None

