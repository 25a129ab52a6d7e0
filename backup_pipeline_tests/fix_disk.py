"""Small disks for disk-full tests: real tmpfs mounts (we run as root), unmounted at teardown."""

import subprocess
from pathlib import Path

import pytest


@pytest.fixture
def tmpfs(tmp_path):
    """tmpfs(name, options) -> a freshly mounted tmpfs directory, e.g. tmpfs("stage", "size=1m")."""
    mounts = []

    def mount(name: str, options: str) -> Path:
        path = tmp_path / f"mnt-{name}"
        path.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)
        mounts.append(path)
        return path

    yield mount
    for path in mounts:
        subprocess.run(["umount", "-l", str(path)], check=False)
