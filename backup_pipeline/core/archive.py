"""Archive naming, streaming compression with sha256, and manifest.json.

Compression runs on the pg_dump stream as it arrives (multithreaded zstd by
default, gzip for compatibility with seed 003's `.dump.gz`), hashing the bytes
that are stored, so no uncompressed copy ever touches the disk and memory stays
bounded by the chunk size. With age recipients the compressed stream is
encrypted (core/encryption.py) before it is hashed and written.
"""

import gzip
import hashlib
import json
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import IO, BinaryIO

import zstandard

from .encryption import encrypt_stream
from .errors import ConfigError, VerifyError

MANIFEST_FORMAT_VERSION = 1
CHUNK = 1024 * 1024
CODECS = ("zstd", "gzip", "none")
_SUFFIX = {"zstd": ".dump.zst", "gzip": ".dump.gz", "none": ".dump"}
DIRECTORY_SUFFIX = ".dir.tar"


@dataclass(frozen=True)
class BackupNames:
    """Object names of one backup, relative to the storage base."""

    directory: str  # <target>/YYYY/MM/DD
    base: str  # <target>_<YYYYMMDDTHHMMSSZ>[_<backup id prefix>]
    codec: str
    format: str = "custom"  # "directory": a tar of pg_dump's directory format (dump_jobs > 1, core/dump_parallel.py)

    @classmethod
    def for_backup(cls, target: str, started_at: datetime, codec: str, backup_id: str | None = None) -> "BackupNames":
        """Names sort by time; the backup id keeps two backups started in the same second apart."""
        check_codec(codec)
        suffix = f"_{backup_id[:8]}" if backup_id else ""
        return cls(
            directory=f"{target}/{started_at:%Y/%m/%d}",
            base=f"{target}_{started_at:%Y%m%dT%H%M%SZ}{suffix}",
            codec=codec,
        )

    @property
    def archive(self) -> str:
        if self.format == "directory":  # pg_dump compressed each file itself; the tar is not compressed again
            return f"{self.directory}/{self.base}{DIRECTORY_SUFFIX}"
        return f"{self.directory}/{self.base}{_SUFFIX[self.codec]}"

    @property
    def globals(self) -> str:
        return f"{self.directory}/{self.base}.roles.sql"

    @property
    def manifest(self) -> str:
        return f"{self.directory}/{self.base}.manifest.json"


def check_codec(codec: str) -> str:
    if codec not in CODECS:
        raise ConfigError(f"compression {codec!r} is not supported: use one of {', '.join(CODECS)}")
    return codec


class HashingWriter:
    """File-like sink that counts and sha256-hashes what passes through."""

    def __init__(self, raw: IO[bytes]):
        self.raw = raw
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        self.raw.write(data)
        return len(data)

    def flush(self) -> None:
        self.raw.flush()


class _CountingReader:
    def __init__(self, raw: BinaryIO):
        self.raw, self.size = raw, 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.size += len(data)
        return data


class _GzipReader:
    """Readable gzip stream of src: compressed bytes come out as the encryptor pulls them."""

    def __init__(self, src: BinaryIO, level: int):
        self.src, self.buffer, self.pos, self.done = src, b"", 0, False
        self.zobj = zlib.compressobj(level, zlib.DEFLATED, 31)  # wbits 31: gzip header and trailer

    def read(self, n: int = -1) -> bytes:
        while self.pos >= len(self.buffer) and not self.done:
            chunk = self.src.read(CHUNK)
            self.buffer = self.zobj.compress(chunk) if chunk else self.zobj.flush()
            self.pos, self.done = 0, not chunk
        end = len(self.buffer) if n < 0 else self.pos + n
        data = self.buffer[self.pos:end]
        self.pos += len(data)
        return data


def compress_stream(
    src: BinaryIO, dst: IO[bytes], codec: str, level: int, threads: int = -1, recipients: Sequence[str] = ()
) -> int:
    """Copy src to dst compressed (then age-encrypted for recipients, if any); returns the uncompressed bytes read."""
    if recipients:
        counted = _CountingReader(src)
        if codec == "zstd":
            reader = zstandard.ZstdCompressor(level=level, threads=threads).stream_reader(counted, read_size=CHUNK)
        else:
            reader = _GzipReader(counted, level) if codec == "gzip" else counted
        encrypt_stream(reader, dst, recipients)
        return counted.size
    if codec == "zstd":
        cctx = zstandard.ZstdCompressor(level=level, threads=threads)
        read, _written = cctx.copy_stream(src, dst, read_size=CHUNK, write_size=CHUNK)
        return read
    total = 0
    if codec == "gzip":
        with gzip.GzipFile(fileobj=dst, mode="wb", compresslevel=level, mtime=0) as gz:
            while chunk := src.read(CHUNK):
                gz.write(chunk)
                total += len(chunk)
        return total
    while chunk := src.read(CHUNK):
        dst.write(chunk)
        total += len(chunk)
    return total


def decompress_stream(src: BinaryIO, dst: IO[bytes], codec: str) -> int:
    """Copy src to dst decompressed; raises VerifyError for a corrupt archive."""
    try:
        if codec == "zstd":
            _read, written = zstandard.ZstdDecompressor().copy_stream(src, dst, read_size=CHUNK, write_size=CHUNK)
            return written
        total = 0
        reader: BinaryIO = gzip.GzipFile(fileobj=src, mode="rb") if codec == "gzip" else src  # type: ignore[assignment]
        while chunk := reader.read(CHUNK):
            dst.write(chunk)
            total += len(chunk)
        return total
    except (zstandard.ZstdError, gzip.BadGzipFile, zlib.error, EOFError) as exc:
        raise VerifyError(f"the {codec} archive is corrupt: {exc}") from None


def sha256_of(stream: BinaryIO) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    for chunk in iter_chunks(stream):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def iter_chunks(stream: BinaryIO, size: int = CHUNK) -> Iterator[bytes]:
    while chunk := stream.read(size):
        yield chunk


def manifest_bytes(manifest: dict) -> bytes:
    return (json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def parse_manifest(data: bytes, where: str) -> dict:
    try:
        manifest = json.loads(data)
    except ValueError as exc:
        raise VerifyError(f"manifest {where} is not valid JSON ({exc})") from None
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if version != MANIFEST_FORMAT_VERSION:
        raise VerifyError(f"manifest {where} has format_version {version!r}; this version reads {MANIFEST_FORMAT_VERSION}")
    return manifest
