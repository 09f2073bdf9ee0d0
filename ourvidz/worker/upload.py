"""--store URL: each finished job's files (and their thumbnails) put in an object store through
fsspec, at the production layout (docs/production-payloads.md):

    <store>/<user_id>/<job_id>/<i>.png | 0.mp4     the media (a job without user_id: <job_id>/...)
    <store>/<user_id>/<job_id>/<i>.thumb.webp      256 px on the long side, WEBP

s3://bucket/prefix is any S3-compatible store (AWS, MinIO, Supabase Storage's S3 endpoint, ...):
the endpoint comes from $AWS_ENDPOINT_URL_S3 or $AWS_ENDPOINT_URL, keys and region from the
standard AWS variables ($AWS_ACCESS_KEY_ID, $AWS_SECRET_ACCESS_KEY, $AWS_REGION); more fsspec
storage options as a JSON object in $OURVIDZ_STORE_OPTIONS. Any other fsspec URL works the same.

A job is recorded done only after every one of its files is uploaded; an upload that fails
removes what it had put and fails the attempt (retried: a network error may pass), so a
half-uploaded job is never reported done. The callback's asset url is the path inside the bucket.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ourvidz.errors import BadInput, ServiceError, one_line
from ourvidz.redact import mask_url

OPTIONS_ENV = "OURVIDZ_STORE_OPTIONS"
BUCKETED = ("s3", "s3a", "gs", "gcs", "az", "abfs")


def storage_keys(user_id: str | None, job_id: str, media: list[str]) -> list[tuple[str, str]]:
    """(media key, thumbnail key) per media file, in order: the production's layout."""
    base = f"{user_id}/{job_id}" if user_id else job_id
    return [(f"{base}/{i}{Path(name).suffix}", f"{base}/{i}.thumb.webp") for i, name in enumerate(media)]


class ObjectStore:
    def __init__(self, url: str):
        import fsspec

        self.url, self.shown = url, mask_url(url)
        protocol = fsspec.utils.get_protocol(url)
        options: dict = {}
        if protocol in ("s3", "s3a"):
            endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
            if endpoint:
                options["endpoint_url"] = endpoint
            options["skip_instance_cache"] = True
        elif protocol in ("file", "local"):
            options["auto_mkdir"] = True
        if os.environ.get(OPTIONS_ENV):
            try:
                more = json.loads(os.environ[OPTIONS_ENV])
            except ValueError as exc:
                raise BadInput(f"${OPTIONS_ENV}: not JSON ({exc})") from None
            if not isinstance(more, dict):
                raise BadInput(f"${OPTIONS_ENV}: must be a JSON object")
            options |= more
        try:
            self.fs, root = fsspec.core.url_to_fs(url, **options)
        except (ValueError, ImportError) as exc:
            raise BadInput(f"--store {self.shown}: {one_line(exc)}") from None
        self.root = root.rstrip("/")
        bucketed = protocol in BUCKETED
        # the callback's url: the path inside the bucket (production's storage path), else the full path
        self.base = (self.root.split("/", 1)[1] if "/" in self.root else "") if bucketed else self.root

    def check(self) -> None:
        """At start: the store answers and its bucket (or folder) exists."""
        top = (self.root.split("/", 1)[0] if "/" in self.root else self.root) or self.root
        try:
            self.fs.ls(top, detail=False)  # unlike exists(), says why: refused, no credentials, ...
        except FileNotFoundError:
            raise ServiceError(f"--store {self.shown}: {top} does not exist") from None
        except Exception as exc:  # noqa: BLE001 - any library's failure: one line at start
            raise ServiceError(f"--store {self.shown}: cannot list {top}: {one_line(exc)}") from None

    def path(self, key: str) -> str:
        """What the callback reports for a key."""
        return f"{self.base}/{key}" if self.base else key

    def upload(self, files: list[tuple[Path, str]]) -> list[str]:
        """Put every (local file, key); all or nothing. Returns the paths the callback reports."""
        done: list[str] = []
        try:
            for local, key in files:
                self.fs.put_file(str(local), f"{self.root}/{key}")
                done.append(key)
        except Exception as exc:  # noqa: BLE001 - whatever failed, the job is not stored
            for key in done:
                try:
                    self.fs.rm_file(f"{self.root}/{key}")
                except Exception:  # noqa: BLE001 - best effort; the attempt fails anyway
                    pass
            failed = files[len(done)][1]
            raise ServiceError(f"--store {self.shown}: uploading {failed} failed: {one_line(exc)}") from None
        return [self.path(key) for _, key in files]
