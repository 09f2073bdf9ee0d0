"""Reference images for image-to-image jobs: fetched from a local path or an http(s) URL, with
limits, checked by Pillow, before any model loads.

- http(s) only (no file://, ftp://, data:); redirects followed only to http(s), at most 5.
- At most `max_bytes` (default 20 MiB): a larger Content-Length is refused before reading, and
  reading stops one byte past the limit.
- `timeout` seconds for the whole fetch (connect and every read share one deadline).
- The bytes must be an image Pillow reads as one of TYPES (PNG, JPEG, WEBP), at most MAX_PIXELS.
- A local path is read only inside `local_root` (the worker's --reference-root); without one,
  local paths are refused: a queue payload must not read the worker's files.
Errors: BadInput (the job is wrong: too big, not an image, 4xx, not allowed) or ServiceError
(network trouble, timeouts, 5xx: a retry may succeed). Both one line, the URL's secrets masked.
"""

from __future__ import annotations

import hashlib
import io
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from PIL import Image

from ourvidz.errors import BadInput, ServiceError
from ourvidz.redact import mask_url

TYPES = ("PNG", "JPEG", "WEBP")
MAX_BYTES = 20 * 2**20
MAX_PIXELS = 40_000_000
TIMEOUT = 30.0
CHUNK = 64 * 1024


@dataclass
class Reference:
    """A fetched reference image and what the job's record says about it."""

    image: Image.Image  # RGB
    source: str  # masked
    sha256: str
    format: str
    size: tuple[int, int]
    nbytes: int
    mode: str = "img2img"
    denoise_strength: float | None = None
    resized_to: tuple[int, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "source": self.source, "sha256": self.sha256, "format": self.format,
                "width": self.size[0], "height": self.size[1], "bytes": self.nbytes,
                "denoise_strength": self.denoise_strength,
                "resized_to": f"{self.resized_to[0]}x{self.resized_to[1]}" if self.resized_to else None}

    def fitted(self, width: int, height: int) -> Image.Image:
        """The image scaled to cover width x height, centre-cropped to it (the production worker's way)."""
        self.resized_to = (width, height)
        img = self.image
        scale = max(width / img.width, height / img.height)
        w, h = max(width, round(img.width * scale)), max(height, round(img.height * scale))
        img = img.resize((w, h), Image.LANCZOS)
        left, top = (w - width) // 2, (h - height) // 2
        return img.crop((left, top, left + width, top + height))


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    max_redirections = 5

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urlsplit(newurl).scheme.lower() not in ("http", "https"):
            raise BadInput(f"reference image: redirect to a non-http(s) URL {mask_url(newurl)[:120]} refused")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _fetch_url(url: str, max_bytes: int, timeout: float) -> bytes:
    shown = mask_url(url)[:160]
    deadline = time.monotonic() + timeout
    opener = urllib.request.build_opener(_HttpOnlyRedirects)
    request = urllib.request.Request(url, headers={"User-Agent": "ourvidz", "Accept": "image/*"})
    try:
        with opener.open(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise BadInput(f"reference image {shown}: {int(length)} bytes; the limit is {max_bytes}")
            chunks, got = [], 0
            while True:
                if time.monotonic() > deadline:
                    raise ServiceError(f"reference image {shown}: not fetched within {timeout:g} s")
                chunk = response.read(CHUNK)
                if not chunk:
                    break
                got += len(chunk)
                if got > max_bytes:
                    raise BadInput(f"reference image {shown}: more than {max_bytes} bytes; the limit")
                chunks.append(chunk)
            return b"".join(chunks)
    except urllib.error.HTTPError as exc:
        kind = ServiceError if exc.code >= 500 or exc.code in (408, 429) else BadInput
        raise kind(f"reference image {shown}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ServiceError(f"reference image {shown}: {type(reason).__name__}: {str(reason)[:120]}") from None


def _read_local(path: str, local_root: Path | None, max_bytes: int) -> bytes:
    if local_root is None:
        raise BadInput(f"reference image {path[:160]!r}: local paths are read only under the worker's "
                       "--reference-root; give an http(s) URL")
    root = Path(local_root).resolve()
    target = (root / path).resolve() if not Path(path).is_absolute() else Path(path).resolve()
    if not target.is_relative_to(root):
        raise BadInput(f"reference image {path[:160]!r}: outside --reference-root {root}")
    if not target.is_file():
        raise BadInput(f"reference image {path[:160]!r}: no such file")
    if target.stat().st_size > max_bytes:
        raise BadInput(f"reference image {path[:160]!r}: {target.stat().st_size} bytes; the limit is {max_bytes}")
    return target.read_bytes()


def fetch(source: str, *, local_root: Path | None = None, max_bytes: int = MAX_BYTES,
          timeout: float = TIMEOUT) -> Reference:
    """The reference image named by source (an http(s) URL or a local path), checked."""
    if not isinstance(source, str) or not source.strip():
        raise BadInput("reference image: empty")
    scheme = urlsplit(source).scheme.lower()
    if scheme in ("http", "https"):
        data, shown = _fetch_url(source, max_bytes, timeout), mask_url(source)[:300]
    elif scheme and len(scheme) > 1:  # not a Windows drive letter
        raise BadInput(f"reference image {mask_url(source)[:160]}: only http(s) URLs and local paths")
    else:
        data, shown = _read_local(source, local_root, max_bytes), source[:300]
    try:
        with Image.open(io.BytesIO(data)) as probe:
            fmt = probe.format
            if fmt not in TYPES:
                raise BadInput(f"reference image {shown}: {fmt or 'unknown'} is not one of {', '.join(TYPES)}")
            if probe.width * probe.height > MAX_PIXELS:
                raise BadInput(f"reference image {shown}: {probe.width}x{probe.height} is over {MAX_PIXELS} pixels")
            probe.verify()
        with Image.open(io.BytesIO(data)) as img:
            rgb = img.convert("RGB")
    except BadInput:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise BadInput(f"reference image {shown}: not a readable image ({str(exc)[:100]})") from None
    return Reference(image=rgb, source=shown, sha256=hashlib.sha256(data).hexdigest(), format=fmt,
                     size=rgb.size, nbytes=len(data))
