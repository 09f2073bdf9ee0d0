"""Writing outputs: atomically, never over an existing file, each carrying its full parameters.

PNGs carry the A1111 "parameters" text chunk that other tools read, plus an "ourvidz" chunk with
the whole sidecar; every output has a JSON sidecar beside it; videos are H.264 yuv420p MP4.
"""

from __future__ import annotations

import errno
import io
import json
import os
import queue
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image, PngImagePlugin

from ourvidz.errors import BadInput, DiskFull


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def disk_full(exc: OSError, path: Path) -> DiskFull:
    return DiskFull(f"no space left writing {path} ({os.strerror(exc.errno)}): free some space, then run "
                    "the same command again")


def _synced_temp(path: Path, data: bytes) -> Path:
    """`data` in a temporary file beside `path`, flushed to disk. A full disk is DiskFull, one line,
    with the temporary file removed."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        if exc.errno in NO_SPACE:
            tmp.unlink(missing_ok=True)
            raise disk_full(exc, path) from None
        raise
    return tmp


def atomic_write(path: Path, data: bytes) -> Path:
    """Write to a temporary file in the same folder, then link it into place: readers never see a
    half-written file, and an existing file is never replaced (the link fails instead)."""
    tmp = _synced_temp(path, data)
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise BadInput(f"{path} already exists; ourvidz never overwrites") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_replace(path: Path, data: bytes) -> Path:
    """For files ourvidz owns and updates (manifests, reports): write then rename over."""
    os.replace(_synced_temp(path, data), path)
    return path


def to_json(obj: Any) -> bytes:
    return json.dumps(obj, indent=2, default=str).encode("utf-8") + b"\n"


# A1111's own infotext key-value syntax (modules/infotext_utils.py): a value holding a comma, colon
# or newline is written as a JSON string.
_A1111_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def a1111_quote(value: Any) -> str:
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def to_compact_json(obj: Any) -> bytes:
    """For files rewritten often (a batch's manifest): no indentation, a few times faster and smaller."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8") + b"\n"


def a1111_parameters(prompt: str, negative: str, steps: int, sampler: str, cfg: float, seed: int,
                     width: int, height: int, model: str, extra: dict[str, Any] | None = None,
                     model_hash: str | None = None, version: str | None = None) -> str:
    """The text other tools (A1111, ComfyUI loaders, civitai, sd-parsers) parse from a PNG's
    "parameters" chunk, in A1111's field order; `Version` comes last, as A1111 writes it."""
    fields: dict[str, Any] = {"Steps": steps, "Sampler": sampler, "CFG scale": f"{cfg:g}", "Seed": seed,
                              "Size": f"{width}x{height}"}
    if model_hash:
        fields["Model hash"] = model_hash
    fields["Model"] = model
    fields |= extra or {}
    if version:
        fields["Version"] = version
    tail = ", ".join(f"{k}: {a1111_quote(v)}" for k, v in fields.items())
    return f"{prompt}\nNegative prompt: {negative}\n{tail}"


def parse_a1111(text: str) -> dict[str, Any]:
    lines = text.split("\n")
    prompt_lines, negative, tail = [], "", ""
    for i, line in enumerate(lines):
        if line.startswith("Negative prompt: "):
            negative = line[len("Negative prompt: "):]
            tail = "\n".join(lines[i + 1 :])
            break
        prompt_lines.append(line)
    else:
        tail = prompt_lines.pop() if prompt_lines and "Steps: " in prompt_lines[-1] else ""
    result: dict[str, Any] = {"prompt": "\n".join(prompt_lines), "Negative prompt": negative}
    for key, value in _A1111_PARAM.findall(tail):
        if value.startswith('"') and value.endswith('"'):
            try:
                value = json.loads(value)
            except ValueError:
                pass
        result[key.strip()] = value.strip() if isinstance(value, str) else value
    return result


def save_png(path: Path, image: Image.Image, parameters: str, sidecar: dict[str, Any]) -> Path:
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", parameters)
    info.add_itxt("ourvidz", json.dumps(sidecar, default=str))
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    return atomic_write(path, buf.getvalue())


def save_mp4(path: Path, frames: np.ndarray, fps: int, comment: str = "", metadata: dict[str, str] | None = None,
             on_frame: Callable[[int, int], None] | None = None) -> Path:
    """All frames at once: see Mp4Stream."""
    stream = Mp4Stream(path, fps, comment=comment, metadata=metadata, total=len(frames))
    try:
        stream.add(frames)
    except BaseException:
        stream.abort()
        raise
    return stream.close(on_frame)


class Mp4Stream:
    """H.264 yuv420p MP4 (what browsers and phones play), encoded on a thread from chunks of frames
    as they are made: a video's H.264 encoding runs beside its VAE decode instead of after it
    (libx264 and the RGB->YUV conversion release the GIL). Odd sizes are padded by one pixel. The
    index (moov) is written before the media data (faststart), so playback starts before the whole
    file has arrived. `comment` (the A1111 parameters text) and `metadata` go into the MP4's tags.

    add() never blocks the caller; close() waits for the encoder and puts the file in place
    atomically (never over an existing file); abort() drops everything. An encoder error is raised
    by the next add() or by close()."""

    def __init__(self, path: Path, fps: int, comment: str = "", metadata: dict[str, str] | None = None,
                 total: int | None = None):
        self.path, self.fps, self.total = Path(path), fps, total
        self.comment, self.metadata = comment, dict(metadata or {})
        self.added = self.encoded = 0
        self.encode_seconds = 0.0  # time the encoder thread spent encoding (CPU), for the report
        self._on_frame: Callable[[int, int], None] | None = None
        self._error: BaseException | None = None
        self._dropped = self.closed = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # faststart moves the index in a second pass that reopens the file by name, so the video is
        # encoded to a real file (in a private folder beside the target), then written atomically.
        self._tmp = Path(tempfile.mkdtemp(dir=self.path.parent, prefix=".ourvidz-mp4-"))
        self._chunks: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._encode, name="ourvidz-mp4", daemon=True)
        self._thread.start()

    def add(self, frames: np.ndarray) -> None:
        """[n, H, W, 3] uint8 frames, in order."""
        if self._error is not None:
            raise self._error
        self.added += len(frames)
        self._chunks.put(frames)

    def close(self, on_frame: Callable[[int, int], None] | None = None) -> Path:
        """Wait for the last frame to be encoded (on_frame(done, total) as they are), then write."""
        if self.closed:
            raise ValueError("the MP4 stream is already closed")
        self.closed = True
        self._on_frame = on_frame
        if on_frame is not None:
            on_frame(self.encoded, self.total or self.added)
        self._chunks.put(None)
        self._thread.join()
        try:
            if self._error is not None:
                if isinstance(self._error, OSError) and self._error.errno in NO_SPACE:
                    raise disk_full(self._error, self.path) from None
                raise self._error
            if not self.added:
                raise ValueError("no frames to encode")
            return atomic_write(self.path, (self._tmp / self.path.name).read_bytes())
        finally:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def abort(self) -> None:
        if self.closed:
            return
        self.closed = self._dropped = True
        self._chunks.put(None)
        self._thread.join()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def _encode(self) -> None:
        import av

        container = stream = None
        ended = False  # the closing None was taken from the queue
        try:
            while not ended:
                frames = self._chunks.get()
                if frames is None:
                    ended = True
                    continue
                if self._dropped or self._error is not None:
                    continue  # drain: the caller is aborting, or the encoder already failed
                t0 = time.perf_counter()
                _, h, w, _ = frames.shape
                if h % 2 or w % 2:
                    frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
                if container is None:
                    container = av.open(str(self._tmp / self.path.name), mode="w", format="mp4",
                                        options={"movflags": "+faststart"})
                    for key, value in self.metadata.items():
                        container.metadata[key] = value
                    if self.comment:
                        container.metadata["comment"] = self.comment
                    stream = container.add_stream("libx264", rate=self.fps)
                    stream.width, stream.height = frames.shape[2], frames.shape[1]
                    stream.pix_fmt = "yuv420p"
                    stream.options = {"crf": "18", "preset": "medium"}
                    # Frame threads, as the ffmpeg command line runs libx264 (PyAV's default is
                    # slice threads, which leave most cores of a GPU host idle).
                    stream.codec_context.thread_type = "FRAME"
                for frame in frames:
                    for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame),
                                                                           format="rgb24")):
                        container.mux(packet)
                    self.encoded += 1
                    if self._on_frame is not None:
                        self._on_frame(self.encoded, self.total or self.added)
                self.encode_seconds += time.perf_counter() - t0
            if container is not None and not self._dropped and self._error is None:
                t0 = time.perf_counter()
                for packet in stream.encode():
                    container.mux(packet)
                container.close()  # writes the index (faststart's second pass)
                container = None
                self.encode_seconds += time.perf_counter() - t0
        except BaseException as exc:  # handed to the caller's thread by add()/close()
            self._error = exc
            while not ended and self._chunks.get() is not None:
                pass
        finally:
            if container is not None:
                try:
                    container.close()
                except Exception:
                    pass


def mp4_boxes(path: Path) -> list[str]:
    """The top-level box types of an MP4 in file order (faststart: moov before mdat)."""
    import struct

    boxes, data = [], Path(path).read_bytes()
    i = 0
    while i + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[i : i + 8])
        if size == 1:
            (size,) = struct.unpack(">Q", data[i + 8 : i + 16])
        boxes.append(kind.decode("latin-1"))
        if size == 0:
            break
        i += size
    return boxes


def read_video_tags(path: Path) -> dict[str, str]:
    import av

    with av.open(str(path)) as container:
        return dict(container.metadata)


def read_video_info(path: Path) -> dict[str, Any]:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return {"frames": frames, "fps": float(stream.average_rate), "width": stream.width,
                "height": stream.height, "codec": stream.codec_context.name, "pix_fmt": stream.codec_context.pix_fmt}


def read_video_frames(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(container.streams.video[0])])


def read_metadata(path: Path) -> dict[str, Any]:
    """The sidecar of a run, from the JSON itself, a PNG's ourvidz chunk, or the JSON beside a video."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{path} does not exist")
    try:
        if path.suffix.lower() == ".png":
            text = Image.open(path).text.get("ourvidz")
            if text is None:
                raise BadInput(f"{path} carries no ourvidz metadata (was it made by ourvidz?)")
            meta = json.loads(text)
        elif path.suffix.lower() == ".mp4":
            return read_metadata(path.with_suffix(".json"))
        else:
            meta = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise BadInput(f"{path}: cannot read its metadata: {exc}") from None
    if not isinstance(meta, dict) or "plan" not in meta:
        raise BadInput(f"{path}: not an ourvidz sidecar (no 'plan')")
    return meta
