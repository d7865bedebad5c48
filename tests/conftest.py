"""Fixtures every test folder may use (defined in tests/helpers): the trainer's tiny real assets, a per-test
TMPDIR, a read-only folder and a real S3 API server."""

from tests.helpers.mounts import read_only_dir  # noqa: F401  (re-exported as fixtures)
from tests.helpers.training import run_tmp, train_assets  # noqa: F401
from tests.helpers.s3 import s3_server  # noqa: F401
