"""Fixtures: one engine for the whole session (with an audit log), clients for it, and a way to
restart it on the same data directory."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from kubekms_e2e import Engine  # noqa: E402

# Keep the developer's own AWS configuration out of every client the tests make.
os.environ["AWS_CONFIG_FILE"] = os.devnull
os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
for _name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_KMS", "AWS_SESSION_TOKEN"):
    os.environ.pop(_name, None)


@pytest.fixture(scope="session")
def engine(tmp_path_factory):
    """The engine binary, started once on a fresh data directory with `--audit-log`."""
    eng = Engine(tmp_path_factory.mktemp("engine"))
    eng.start()
    yield eng
    rc = eng.stop()
    # SIGTERM is a graceful shutdown, not a crash.
    assert rc == 0, f"engine exited with {rc} on SIGTERM"
    for path in eng.output_files():
        assert "panicked" not in path.read_text(errors="replace"), f"the engine panicked: see {path}"


@pytest.fixture(scope="session")
def kms(engine):
    return engine.client()


@pytest.fixture(scope="session")
def kms_raw(engine):
    """A client without botocore's parameter validation, so the engine's own checks run."""
    return engine.client(validate=False)


@pytest.fixture
def restart_engine(engine):
    """Restart the session engine on the same data directory and port; returns the engine."""

    def restart():
        return engine.restart()

    return restart


@pytest.fixture
def unique():
    """A short unique suffix for alias names and descriptions."""
    return uuid.uuid4().hex[:12]


@pytest.fixture
def symmetric_key(kms, unique):
    return kms.create_key(Description=f"e2e symmetric {unique}")["KeyMetadata"]
