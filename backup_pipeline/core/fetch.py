"""Fetching a stored archive as the plain pg_dump file in one pass: download, sha256, decrypt, decompress.

Design decision: the bytes are hashed as they arrive and decrypted and
decompressed on the same pass into `<dest>.partial`, which becomes `dest` only
once the sha256 and size of the stored bytes match the manifest; so no
compressed copy touches the stage, and nobody ever reads an unchecked dump.
A mismatch is reported as such (VerifyError) even when the damage also broke
decryption or decompression half-way. A corrupt primary falls back to the
storage's second copies, as download_verified does. A directory-format backup
(dump_jobs > 1, core/dump_parallel.py) is unpacked from its tar on the same pass
into `<dest>.partial/`, which becomes the directory `dest`.
"""

import contextlib
import hashlib
import os
import shutil
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import zstandard

from .archive import CHUNK, iter_chunks
from .backup import check_digest, from_primary_or_copy
from .dump_parallel import Untar
from .encryption import decrypt_stream, identities_for, is_encrypted
from .errors import VerifyError
from .storage import Storage


def download_plain(storage: Storage, manifest: dict, dest: Path) -> None:
    """Write the backup's decrypted, decompressed pg_dump archive to dest, checked against the manifest.

    For a directory-format backup dest becomes pg_dump's directory (pg_restore reads either)."""
    from_primary_or_copy(_download_plain, storage, manifest, dest)


class _Hashing:
    """Reader that sha256-hashes and counts what passes through."""

    def __init__(self, raw: BinaryIO):
        self.raw, self.sha256, self.size = raw, hashlib.sha256(), 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.sha256.update(data)
        self.size += len(data)
        return data


class _Unpacking:
    """Writer that decompresses (zstd, gzip or none) into out; close() says whether the stream ended whole."""

    def __init__(self, out: BinaryIO, codec: str):
        self.out, self.codec = out, codec
        if codec == "zstd":
            self._z = zstandard.ZstdDecompressor().decompressobj()
        elif codec == "gzip":
            self._z = zlib.decompressobj(wbits=31)

    def write(self, data: bytes) -> int:
        try:
            self.out.write(self._z.decompress(data) if self.codec != "none" else data)
        except (zstandard.ZstdError, zlib.error) as exc:
            raise VerifyError(f"the {self.codec} archive is corrupt: {exc}") from None
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self.codec != "none" and not self._z.eof:
            raise VerifyError(f"the {self.codec} archive is corrupt: it ends before its last block")


def is_directory_format(manifest: dict) -> bool:
    return manifest.get("format") == "directory"


@contextlib.contextmanager
def _unpacking_into(manifest: dict, tmp: Path) -> Iterator["_Unpacking | Untar"]:
    """The sink for the stored bytes: a tar unpacked into the folder tmp, or a file decompressed into tmp."""
    if is_directory_format(manifest):
        untar = Untar(tmp)
        try:
            yield untar
        finally:
            untar.abort()
    else:
        with open(tmp, "wb") as out:
            yield _Unpacking(out, manifest["compression"]["codec"])
            out.flush()


def stream_plain(storage: Storage, manifest: dict, out: BinaryIO) -> None:
    """Write a custom-format backup's decrypted, decompressed pg_dump archive into out (e.g. pg_restore's stdin),
    then check the stored bytes against the manifest: VerifyError if they differ, after out has had them all.

    For drills on a stage too small to hold the dump (core/drill.py): nothing touches the disk. A reader that
    stops early (pg_restore -l has read the table of contents) surfaces as BrokenPipeError.
    """
    if is_directory_format(manifest):
        raise ValueError("a directory-format backup cannot be streamed: pg_restore needs its files")
    key = manifest["archive"]["key"]
    identities = identities_for(manifest) if is_encrypted(manifest) else None
    with storage.open_read(key) as stream:
        _pump(stream, _Unpacking(out, manifest["compression"]["codec"]), identities, storage.uri(key), manifest["archive"])


def _pump(stream: BinaryIO, sink, identities, uri: str, expected: dict) -> None:
    """Hash the stored bytes as they pass, decrypt and unpack them into sink, then check them against the manifest."""
    source = _Hashing(stream)
    try:
        if identities is not None:
            decrypt_stream(source, sink, identities, uri)
        else:
            for chunk in iter_chunks(source, CHUNK):
                sink.write(chunk)
        sink.close()
    except VerifyError:
        for _ in iter_chunks(source, CHUNK):  # the checksum tells damaged from replaced or truncated
            pass
        check_digest(uri, source.sha256.hexdigest(), source.size, expected)
        raise
    for _ in iter_chunks(source, CHUNK):
        pass
    check_digest(uri, source.sha256.hexdigest(), source.size, expected)


def _download_plain(storage: Storage, manifest: dict, dest: Path) -> None:
    key, expected = manifest["archive"]["key"], manifest["archive"]
    uri = storage.uri(key)
    identities = identities_for(manifest) if is_encrypted(manifest) else None  # IdentityMissing before any download
    tmp = dest.with_name(dest.name + ".partial")
    try:
        with storage.open_read(key) as stream, _unpacking_into(manifest, tmp) as sink:
            _pump(stream, sink, identities, uri, expected)
        os.replace(tmp, dest)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)

