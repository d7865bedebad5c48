"""Where shard folders live: a local path or an object-store URI (s3://, gs://, ...), and the few file
operations pretokenize needs on either. Transfers go through streaming's own uploaders and downloaders, so
every store streaming reads (S3 and S3-compatible via ``S3_ENDPOINT_URL``, GCS, Azure, ...) works here too.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


def is_remote(path: str | os.PathLike) -> bool:
    return "://" in str(path)


def join(base: str | os.PathLike, *names: str) -> str:
    """``base/name/...`` for a URI (always ``/``) or a local path."""
    if is_remote(base):
        return "/".join([str(base).rstrip("/"), *names])
    return str(Path(base, *names))


def staging_dir(remote: str) -> Path:
    """A local folder unique to ``remote`` where its small files (index, meta, markers) are mirrored."""
    return Path(tempfile.gettempdir()) / "srdd_scale_staging" / hashlib.sha256(remote.encode()).hexdigest()[:16]


def upload(local_file: Path, remote_dir: str) -> None:
    """Copy ``local_file`` to ``remote_dir/<its name>``."""
    from streaming.base.storage.upload import CloudUploader

    uploader = CloudUploader.get(out=(str(local_file.parent), remote_dir), keep_local=True, exist_ok=True)
    uploader.upload_file(local_file.name)


def fetch(remote_file: str, local_file: Path) -> bool:
    """Download ``remote_file`` to ``local_file``; False (and no file) when the store has no such object."""
    from streaming.base.storage.download import CloudDownloader

    local_file.parent.mkdir(parents=True, exist_ok=True)
    local_file.unlink(missing_ok=True)
    try:
        CloudDownloader.direct_download(remote_file, str(local_file))
    except Exception as err:  # each store's client has its own "no such object" error
        if _is_not_found(err):
            return False
        raise
    return local_file.is_file()


def _is_not_found(err: Exception) -> bool:
    if isinstance(err, FileNotFoundError) or type(err).__name__ == "NotFound":  # local paths, GCS
        return True
    code = getattr(err, "response", {}).get("Error", {}).get("Code")  # botocore's ClientError (S3)
    return str(code) in ("404", "NoSuchKey", "NotFound")
