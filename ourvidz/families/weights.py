"""Where each model family's weights are: the models file, hub ids and the local cache.

A models file (--models, else $OURVIDZ_MODELS, else ~/.config/ourvidz/models.yaml) maps a family
to its weights:

    sdxl:
      single_file: /models/lustifySDXLNSFW_v20.safetensors   # or path: a diffusers folder / hub id
      config: /models/sdxl-base          # configs + tokenizers for single_file (folder or hub id)
    wan:
      path: Wan-AI/Wan2.1-T2V-1.3B-Diffusers                # a diffusers folder or a hub id
    qwen:
      path: /models/Qwen2.5-7B
    allow_download: false                # hub ids come from the local cache only, unless true

With no models file at all, every family runs on the built-in demo models (said loudly).
Loading is local-only by default; `ourvidz models fetch FAMILY` downloads.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ourvidz import families
from ourvidz.datafiles import read_yaml
from ourvidz.errors import BadInput, WeightsError

FAMILIES = families.names()
SINGLE_FILE_CONFIG = ["*.json", "*.txt", "*.model"]  # what from_single_file reads from its config folder


def user_models_file() -> Path:
    return Path.home() / ".config" / "ourvidz" / "models.yaml"


@dataclass(frozen=True)
class ModelSource:
    family: str
    kind: Literal["demo", "folder", "single_file", "hub"]
    path: str  # folder, file or hub id ("demo" for demo)
    config: str | None = None  # single_file only: folder or hub id with configs and tokenizers
    allow_download: bool = False
    origin: str = ""  # where this came from, for messages

    @property
    def is_demo(self) -> bool:
        return self.kind == "demo"

    def describe(self) -> str:
        if self.is_demo:
            return "demo (tiny random weights)"
        extra = f" with config {self.config}" if self.config else ""
        return f"{self.kind} {self.path}{extra}"


def models_file_path(models_file: Path | str | None) -> Path | None:
    if models_file:
        path = Path(models_file)
        if not path.is_file():
            raise BadInput(f"models file {path} does not exist")
        return path
    env = os.environ.get("OURVIDZ_MODELS")
    if env:
        if not Path(env).is_file():
            raise BadInput(f"$OURVIDZ_MODELS points to {env}, which does not exist")
        return Path(env)
    return user_models_file() if user_models_file().is_file() else None


def _is_hub_id(text: str) -> bool:
    return text.count("/") == 1 and not text.startswith((".", "/", "~")) and not Path(text).exists()


def resolve_sources(models_file: Path | str | None = None, demo: bool = False) -> dict[str, ModelSource]:
    """family -> source. Raises BadInput for a malformed models file."""
    path = None if demo else models_file_path(models_file)
    if path is None:
        origin = "--demo" if demo else "no models file: using the demo models"
        return {f: ModelSource(f, "demo", "demo", origin=origin) for f in FAMILIES}
    data = read_yaml(path) or {}
    if not isinstance(data, dict):
        raise BadInput(f"{path}: expected a mapping of family -> weights")
    allow = data.get("allow_download", False)
    if not isinstance(allow, bool):
        raise BadInput(f"{path}: field 'allow_download': must be true or false")
    unknown = set(data) - set(FAMILIES) - {"allow_download"}
    if unknown:
        raise BadInput(f"{path}: field '{sorted(unknown)[0]}': unknown family; known: {', '.join(FAMILIES)}")
    sources = {}
    for family, entry in data.items():
        if family == "allow_download":
            continue
        if entry == "demo":
            sources[family] = ModelSource(family, "demo", "demo", origin=str(path))
            continue
        if not isinstance(entry, dict) or set(entry) - {"path", "single_file", "config"}:
            raise BadInput(f"{path}: field '{family}': expected 'path' or 'single_file' (+ 'config'), or 'demo'")
        if "single_file" in entry:
            if not families.get(family).single_file:
                loads = ", ".join(n for n, f in families.FAMILIES.items() if f.single_file)
                raise BadInput(f"{path}: field '{family}.single_file': only {loads} loads single-file checkpoints")
            config = str(entry.get("config") or families.get(family).hub_id)
            sources[family] = ModelSource(family, "single_file", os.path.expanduser(str(entry["single_file"])),
                                          config=os.path.expanduser(config), allow_download=allow, origin=str(path))
        elif "path" in entry:
            p = os.path.expanduser(str(entry["path"]))
            kind = "hub" if _is_hub_id(p) else "folder"
            sources[family] = ModelSource(family, kind, p, allow_download=allow, origin=str(path))
        else:
            raise BadInput(f"{path}: field '{family}': needs 'path' or 'single_file'")
    return sources


def local_dir(ref: str, allow_download: bool, family: str, allow_patterns=None) -> Path:
    """A folder or hub id -> a local folder; hub ids come from the cache unless downloads are on."""
    if not _is_hub_id(ref):
        path = Path(ref)
        if not path.is_dir():
            raise WeightsError(f"{family} weights folder {path} does not exist; fix '{family}:' in the models "
                               f"file (a folder, or a hub id such as {families.get(family).hub_id})")
        return path
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(ref, local_files_only=not allow_download, allow_patterns=allow_patterns))
    except LocalEntryNotFoundError:
        if allow_download:
            raise WeightsError(f"cannot download {ref} for {family}: the Hugging Face hub is unreachable "
                               "(offline, or HF_HUB_OFFLINE is set)") from None
        raise WeightsError(f"{family} weights {ref} are not in the local Hugging Face cache; run "
                           f"`ourvidz models fetch {family}` (or set allow_download: true)") from None
    except Exception as exc:  # network, auth, missing repo
        raise WeightsError(f"cannot fetch {ref} for {family}: {type(exc).__name__}: {exc}") from None


def fetch_plan(family: str, models_file=None) -> dict:
    """What `ourvidz models fetch FAMILY` downloads: the hub id and the files of it the family loads."""
    spec = families.get(family)
    path = models_file_path(models_file)
    src = resolve_sources(models_file).get(family)
    configured = src is not None and not src.is_demo
    if not configured:
        ref, patterns = spec.hub_id, list(spec.fetch_patterns) or None
    elif src.kind == "single_file":
        ref, patterns = src.config, SINGLE_FILE_CONFIG
    else:
        ref, patterns = src.path, list(spec.fetch_patterns) or None
    if not _is_hub_id(ref):
        what = "the config folder" if configured and src.kind == "single_file" else "the local folder"
        raise BadInput(f"{family} is configured with {what} {ref}: nothing to download (point it at a hub id, "
                       f"such as {spec.hub_id}, to fetch one)")
    advice = ""
    if not configured:
        where = path or user_models_file()
        advice = f"to use it, add '{family}: {{path: {ref}}}' to {where}"
    return {"family": family, "hub_id": ref, "allow_patterns": patterns, "configured": configured, "advice": advice}


def select_files(repo_files: list[str], patterns: list[str]) -> list[str]:
    """The repository files the patterns take. A pattern for an fp16 file falls back to the plain
    file where a repository has no fp16 copy (a fine-tune published in one precision)."""
    import fnmatch

    chosen: set[str] = set()
    for pattern in patterns:
        hits = fnmatch.filter(repo_files, pattern)
        if not hits and ".fp16." in pattern:
            hits = fnmatch.filter(repo_files, pattern.replace(".fp16.", "."))
        chosen.update(hits)
    return sorted(chosen)


def fetch(family: str, models_file=None) -> dict:
    """Download the files a family loads (for single-file SDXL: its configs) into the HF cache."""
    plan = fetch_plan(family, models_file)
    if plan["allow_patterns"]:
        try:
            from huggingface_hub import HfApi

            listed = HfApi().list_repo_files(plan["hub_id"])
        except Exception:  # offline or no listing: the patterns as they are (the download says why)
            listed = None
        if listed:
            plan["allow_patterns"] = select_files(listed, plan["allow_patterns"]) or plan["allow_patterns"]
    folder = local_dir(plan["hub_id"], True, family, allow_patterns=plan["allow_patterns"])
    files = [f for f in folder.rglob("*") if f.is_file()]
    return plan | {"folder": str(folder), "files": len(files), "bytes": sum(f.stat().st_size for f in files)}


def status(models_file=None) -> list[dict]:
    """One row a family: how it is configured, whether its weights are here, and their size."""
    path = models_file_path(models_file)
    sources = resolve_sources(models_file)
    rows = []
    for family in FAMILIES:
        src = sources.get(family)
        row = {"family": family, "configured": src.describe() if src else "not configured",
               "origin": src.origin if src else str(path), "found": False, "bytes": 0, "detail": ""}
        try:
            if src is None:
                row["detail"] = (f"add '{family}: {{path: {families.get(family).hub_id}}}' (or a folder) to {path}; "
                                 f"`ourvidz models fetch {family}` downloads that hub id")
            elif src.is_demo:
                row.update(found=True, detail="tiny random weights, built on first use")
            else:
                if src.kind != "single_file":
                    folder = local_dir(src.path, False, family)
                    marker = families.get(family).marker_file
                    if not (folder / marker).is_file():
                        raise WeightsError(f"{folder} has no {marker}: not a {family} model folder")
                files = [Path(src.path)] if src.kind == "single_file" else list(folder.rglob("*.safetensors"))
                if src.kind == "single_file":
                    safetensors_header(files[0]) if files[0].is_file() else None
                    if not files[0].is_file():
                        raise WeightsError(f"{files[0]} does not exist")
                    local_dir(src.config, False, family)
                row.update(found=bool(files), bytes=sum(f.stat().st_size for f in files),
                           detail=f"{len(files)} weight files" if files else "no .safetensors files")
        except WeightsError as exc:
            row["detail"] = str(exc)
        rows.append(row)
    return rows


def safetensors_header(path: Path) -> tuple[bytes, int]:
    """The raw JSON header of a .safetensors file, checked, and the file's size."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise WeightsError(f"{path} is not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", raw)
        if n <= 0 or 8 + n > size or n > 100_000_000:
            raise WeightsError(f"{path} is not a valid safetensors file (header length {n}, file {size} bytes)")
        header = f.read(n)
    try:
        json.loads(header)
    except ValueError:
        raise WeightsError(f"{path} is a broken safetensors file (its header is not JSON)") from None
    return header, size


def _hash_cache_file() -> Path:
    return Path(os.environ.get("OURVIDZ_CACHE", Path.home() / ".cache" / "ourvidz")) / "hashes.json"


def file_sha256(path: Path) -> str:
    """The sha256 of a whole file, remembered by (path, size, mtime) under $OURVIDZ_CACHE: a 7 GB
    checkpoint is read once, not at every load. Reading shows as a progress phase with its bytes."""
    from ourvidz.progress import phase

    path = Path(path).resolve()
    st = path.stat()
    key = str(path)
    cache_file = _hash_cache_file()
    try:
        known = json.loads(cache_file.read_text(encoding="utf-8"))
        if not isinstance(known, dict):
            known = {}
    except (OSError, ValueError):
        known = {}
    entry = known.get(key)
    if isinstance(entry, dict) and entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns:
        return str(entry["sha256"])
    digest = hashlib.sha256()
    with phase(f"hash {path.name}", total=st.st_size, unit="B") as ph, open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
            ph.advance(len(chunk))
    known[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest.hexdigest()}
    try:
        from ourvidz.outputs import atomic_replace

        cache_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_replace(cache_file, json.dumps(known, indent=1).encode())
    except OSError:
        pass  # an unwritable cache only costs the next load a re-read
    return digest.hexdigest()


# A1111's "Model hash" for a single-file checkpoint is its AutoV2 hash: the first 10 hex digits of
# the file's sha256. A diffusers folder has no A1111 hash; its stand-in is the first 10 hex digits
# of the sha256 over the weight files' names and headers (identity's header_sha256).
HASH_KINDS = {"single_file": "AutoV2 (sha256 of the checkpoint file, first 10 hex digits)",
              "folder": "ourvidz header hash (sha256 of the weight files' headers, first 10 hex digits; "
                        "a stand-in: A1111 hashes single files only)"}


def weight_files(path: Path) -> list[Path]:
    """A model's weight files: the single file itself, or a folder's safetensors (sorted); none for
    a path that is neither."""
    if path.is_file():
        return [path]
    return sorted(path.rglob("*.safetensors")) if path.is_dir() else []


def sha256_in_background(path: Path):
    """file_sha256 on a thread (hashlib releases the GIL): the A1111 hash of a checkpoint is read
    while the checkpoint loads, not after it. A Future; its result() is the hex digest."""
    import contextvars
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ourvidz-hash")
    future = pool.submit(contextvars.copy_context().run, file_sha256, path)  # progress phases go to our listener
    pool.shutdown(wait=False)
    return future


def identity(source: ModelSource, folder: Path | None = None, sha256: str | None = None) -> dict:
    """Path, size and a hash of the weight files' headers: enough to tell two models apart, cheap to
    compute; and the A1111 model hash (see HASH_KINDS). `sha256`: the single file's, already known."""
    if source.is_demo and folder is None:
        return {"kind": "demo", "note": "tiny random weights"}
    base = Path(source.path) if source.kind == "single_file" else folder
    files = weight_files(base)
    digest, total = hashlib.sha256(), 0
    for f in files:
        header, size = safetensors_header(f)
        digest.update(f.name.encode() + header)
        total += size
    found = {"kind": source.kind, "path": source.path, "local": str(base), "files": len(files),
             "bytes": total, "header_sha256": digest.hexdigest()[:16], **({"config": source.config} if source.config else {})}
    if base.is_file():
        found |= {"sha256": sha256 or file_sha256(base), "model_hash_kind": HASH_KINDS["single_file"]}
        found["model_hash"] = found["sha256"][:10]
    else:
        found |= {"model_hash": digest.hexdigest()[:10], "model_hash_kind": HASH_KINDS["folder"]}
    return found


def model_name(found: dict) -> str:
    """The model's name as A1111 writes it: the checkpoint file's name without its extension, the
    folder's name, the hub repository's name."""
    if found.get("kind") == "demo" or "path" not in found:
        return "ourvidz-demo (random weights)"
    name = Path(found["path"]).name
    return Path(name).stem if found.get("kind") == "single_file" else name


def token_counter(models_file=None, demo: bool = False):
    """The most exact CLIP token counter available without loading a model."""
    from ourvidz.clip_tokens import best_counter

    clip = next(n for n, f in families.FAMILIES.items() if f.clip_window)  # the family whose tokenizer counts
    try:
        src = resolve_sources(models_file, demo).get(clip)
        if src is not None and not src.is_demo:
            ref = src.config if src.kind == "single_file" else src.path
            folder = local_dir(ref, False, clip) / "tokenizer"
            if (folder / "vocab.json").is_file():
                from transformers import CLIPTokenizer

                return best_counter(CLIPTokenizer.from_pretrained(folder))
    except WeightsError:
        pass
    return best_counter()
