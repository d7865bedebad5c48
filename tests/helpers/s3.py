"""A real S3 API server for the object-storage tests: moto's standalone server process, not a mock."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

S3_ENV = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """``moto_server`` on a free port, its endpoint exported as streaming expects (``S3_ENDPOINT_URL``).

    Yields an object whose ``bucket()`` creates a fresh bucket and returns its name; ranks started by the
    tests inherit the environment. The server is stopped by its pid at the end of the session.
    """
    executable = shutil.which("moto_server")
    if executable is None:
        pytest.fail('moto_server not found: pip install "moto[server]" boto3 (the dev extra)')
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("w") as out:
        proc = subprocess.Popen([executable, "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(endpoint, timeout=1)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"moto_server did not start: {Path(log).read_text()[-2000:]}")
            time.sleep(0.2)
    saved = {key: os.environ.get(key) for key in [*S3_ENV, "S3_ENDPOINT_URL"]}
    os.environ.update(S3_ENV, S3_ENDPOINT_URL=endpoint)

    import boto3

    client = boto3.client("s3", endpoint_url=endpoint)

    def bucket() -> str:
        name = f"srdd-{uuid.uuid4().hex[:12]}"
        client.create_bucket(Bucket=name)
        return name

    def upload_folder(folder: Path, uri: str) -> None:
        bucket_name, _, prefix = uri.removeprefix("s3://").partition("/")
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file():
                client.upload_file(str(path), bucket_name, f"{prefix}/{path.relative_to(folder).as_posix()}")

    def keys(uri: str) -> list[str]:
        bucket_name, _, prefix = uri.removeprefix("s3://").partition("/")
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket_name, Prefix=prefix)
        return sorted(obj["Key"][len(prefix) + 1:] for page in pages for obj in page.get("Contents", []))

    try:
        yield SimpleNamespace(endpoint=endpoint, client=client, bucket=bucket, upload_folder=upload_folder, keys=keys)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
