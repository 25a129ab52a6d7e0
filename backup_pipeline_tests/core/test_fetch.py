"""One-pass fetch: the stored archive comes out as the plain dump, checked against the manifest on the way."""

import hashlib
import io
import os

import pytest

from backup_pipeline.core.archive import compress_stream
from backup_pipeline.core.errors import VerifyError
from backup_pipeline.core.fetch import download_plain
from backup_pipeline.core.storage import LocalStorage

PLAIN = b"".join(hashlib.sha256(str(i).encode()).hexdigest().encode() for i in range(50_000))  # 3.2 MB


def _stored(tmp_path, codec: str) -> tuple[LocalStorage, dict]:
    storage = LocalStorage((tmp_path / "storage").as_uri())
    out = io.BytesIO()
    compress_stream(io.BytesIO(PLAIN), out, codec, 1)
    storage.put_bytes(out.getvalue(), "t/a.dump")
    data = out.getvalue()
    return storage, {"backup_id": "b1", "target": "t", "compression": {"codec": codec},
                     "archive": {"key": "t/a.dump", "size_bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}}


@pytest.mark.parametrize("codec", ["zstd", "gzip", "none"])
def test_the_plain_dump_comes_out_checked(tmp_path, codec):
    storage, manifest = _stored(tmp_path, codec)
    download_plain(storage, manifest, tmp_path / "plain.dump")
    assert (tmp_path / "plain.dump").read_bytes() == PLAIN
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.dump", "storage"]


@pytest.mark.parametrize("codec", ["zstd", "gzip"])
@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_damaged_archive_is_a_checksum_mismatch_and_leaves_nothing(tmp_path, codec, damage):
    storage, manifest = _stored(tmp_path, codec)
    path = tmp_path / "storage" / "t" / "a.dump"
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
    else:
        del data[len(data) // 2:]
    path.write_bytes(bytes(data))
    with pytest.raises(VerifyError, match="does not match its manifest"):
        download_plain(storage, manifest, tmp_path / "plain.dump")
    assert sorted(os.listdir(tmp_path)) == ["storage"]
