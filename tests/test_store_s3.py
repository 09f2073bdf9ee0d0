"""--store: uploads to a real S3 API (moto's server mode, started here), the production layout,
all or nothing."""

from __future__ import annotations

import pytest

from eras_servers import S3Server, png_bytes
from ourvidz.errors import BadInput, ServiceError
from ourvidz.worker.upload import ObjectStore, storage_keys


@pytest.fixture(scope="module")
def s3():
    server = S3Server()
    yield server
    server.stop()


@pytest.fixture
def env(s3, monkeypatch):
    for k, v in s3.env.items():
        monkeypatch.setenv(k, v)


def test_storage_keys_are_the_production_layout():
    assert storage_keys("u1", "j1", ["image-00.png", "image-01.png"]) == [
        ("u1/j1/0.png", "u1/j1/0.thumb.webp"), ("u1/j1/1.png", "u1/j1/1.thumb.webp")]
    assert storage_keys("u1", "j2", ["video.mp4"]) == [("u1/j2/0.mp4", "u1/j2/0.thumb.webp")]
    assert storage_keys(None, "j3", ["image-00.png"])[0][0] == "j3/0.png"


def test_upload_puts_every_file_at_its_key(s3, env, tmp_path):
    (tmp_path / "a.png").write_bytes(png_bytes())
    (tmp_path / "a.webp").write_bytes(b"thumb")
    store = ObjectStore("s3://workspace-temp")
    store.check()
    paths = store.upload([(tmp_path / "a.webp", "u/j/0.thumb.webp"), (tmp_path / "a.png", "u/j/0.png")])
    assert paths == ["u/j/0.thumb.webp", "u/j/0.png"]  # the path inside the bucket, as the callback reports it
    assert s3.keys("u/j/") == ["u/j/0.png", "u/j/0.thumb.webp"] and s3.get("u/j/0.png") == png_bytes()


def test_a_prefix_is_part_of_the_reported_path(s3, env, tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    assert ObjectStore("s3://workspace-temp/stage").upload([(tmp_path / "a.png", "u/k/0.png")]) == ["stage/u/k/0.png"]
    assert s3.keys("stage/") == ["stage/u/k/0.png"]


def test_a_failed_upload_leaves_nothing_behind(s3, env, tmp_path):
    (tmp_path / "ok.png").write_bytes(b"x")
    store = ObjectStore("s3://workspace-temp")
    with pytest.raises(ServiceError, match="uploading u/half/1.png failed") as exc:
        store.upload([(tmp_path / "ok.png", "u/half/0.png"), (tmp_path / "missing.png", "u/half/1.png")])
    assert exc.value.retryable and s3.keys("u/half/") == []


def test_a_missing_bucket_is_said_at_start(s3, env):
    with pytest.raises(ServiceError, match="no-such-bucket does not exist"):
        ObjectStore("s3://no-such-bucket/x").check()


def test_bad_store_options(monkeypatch):
    monkeypatch.setenv("OURVIDZ_STORE_OPTIONS", "[1]")
    with pytest.raises(BadInput, match="JSON object"):
        ObjectStore("s3://b")


def test_local_folders_work_through_the_same_path(tmp_path):
    (tmp_path / "f.png").write_bytes(b"x")
    (tmp_path / "store").mkdir()
    store = ObjectStore(str(tmp_path / "store"))
    store.check()
    [path] = store.upload([(tmp_path / "f.png", "u/j/0.png")])
    assert (tmp_path / "store" / "u" / "j" / "0.png").read_bytes() == b"x" and path.endswith("store/u/j/0.png")


def test_an_unreachable_store_is_said_at_start_with_why(monkeypatch, s3):
    for k, v in s3.env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("OURVIDZ_STORE_OPTIONS", '{"config_kwargs": {"retries": {"max_attempts": 1}}}')
    with pytest.raises(ServiceError, match="cannot list workspace-temp: EndpointConnectionError"):
        ObjectStore("s3://workspace-temp").check()
