"""Fixtures for the core tests: drill servers of one's own."""

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def drill_tmp(monkeypatch) -> Iterator[Path]:
    """A temp folder of this test's own for drill servers, so servers of tests running alongside do not count."""
    path = Path(tempfile.mkdtemp(prefix="drill-tmp-", dir="/tmp"))
    path.chmod(0o755)  # the servers run as nobody
    monkeypatch.setattr(tempfile, "tempdir", str(path))
    yield path
    shutil.rmtree(path, ignore_errors=True)
