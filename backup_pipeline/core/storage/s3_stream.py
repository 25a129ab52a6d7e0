"""Streaming an object of unknown length into S3 as it is produced: one multipart upload, parts sent while writing.

Design decision: the part size is fixed before the first byte from a size
estimate (`choose_part_size`), so every part but the last has the same size
(Cloudflare R2 requires it), and at most `in_flight` parts are buffered in
memory or on the wire: write() blocks while they are all busy, which slows
the producer (pg_dump) to the link's speed instead of growing a buffer. Each
part is retried on its own (botocore's retries, then PART_ATTEMPTS rounds of
ours); a part that fails for good aborts the whole upload, so storage never
holds a half object under the key. A stream shorter than one part is a single
PUT. Nothing is visible under the key until commit() completes the upload.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from backup_pipeline.core.errors import StorageError
from backup_pipeline.core.storage.base import ObjectLock

if TYPE_CHECKING:
    from backup_pipeline.core.storage.s3 import S3Storage

MAX_S3_PARTS = 10_000
PART_ATTEMPTS = 3  # our rounds per part, each with botocore's own retries inside
RETRY_WAIT_S = 1.0


class S3StreamWriter:
    """File-like sink; commit() makes the object visible, close() without commit() aborts the upload."""

    def __init__(self, storage: S3Storage, key: str, part_size: int, lock: ObjectLock | None, in_flight: int):
        from backup_pipeline.core.storage.s3 import _lock_args

        self.storage, self.key, self.full = storage, key, storage._key(key)
        self.part_size, self.lock = part_size, lock
        self.size = 0
        self._lock_args = _lock_args(lock)
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: dict[int, dict[str, Any]] = {}
        self._futures: list[Future] = []
        self._slots = threading.BoundedSemaphore(in_flight)
        self._pool = ThreadPoolExecutor(max_workers=in_flight, thread_name_prefix="s3-part")
        self._done = False

    def write(self, data: bytes) -> int:
        self._buffer += data
        self.size += len(data)
        while len(self._buffer) >= self.part_size:
            part = bytes(self._buffer[: self.part_size])
            del self._buffer[: self.part_size]
            self._submit(part)
        return len(data)

    def flush(self) -> None:
        pass

    def _submit(self, body: bytes) -> None:
        self._raise_failed()
        if self._upload_id is None:
            with self.storage._errors("starting the upload of", self.full):
                self._upload_id = self.storage.client.create_multipart_upload(
                    Bucket=self.storage.bucket, Key=self.full, **self._lock_args)["UploadId"]
        number = len(self._futures) + 1
        if number > MAX_S3_PARTS:
            raise StorageError(
                f"s3://{self.storage.bucket}/{self.full} outgrew {MAX_S3_PARTS} parts of {self.part_size} bytes "
                "(the database grew far past its size estimate): raise the S3 part size and back up again")
        self._slots.acquire()  # back-pressure: at most in_flight parts buffered
        try:
            self._futures.append(self._pool.submit(self._send, number, body))
        except BaseException:
            self._slots.release()
            raise

    def _send(self, number: int, body: bytes) -> None:
        try:
            checksum = {"ChecksumAlgorithm": self._lock_args["ChecksumAlgorithm"]} if self._lock_args else {}
            for attempt in range(1, PART_ATTEMPTS + 1):
                try:
                    with self.storage._errors(f"uploading part {number} of", self.full):
                        reply = self.storage.client.upload_part(
                            Bucket=self.storage.bucket, Key=self.full, UploadId=self._upload_id,
                            PartNumber=number, Body=body, **checksum)
                    break
                except StorageError as exc:
                    if not exc.transient or attempt == PART_ATTEMPTS:
                        raise
                    time.sleep(RETRY_WAIT_S * 2 ** (attempt - 1))
            part = {"PartNumber": number, "ETag": reply["ETag"]}
            if reply.get("ChecksumCRC32"):
                part["ChecksumCRC32"] = reply["ChecksumCRC32"]
            self._parts[number] = part
        finally:
            self._slots.release()

    def _raise_failed(self) -> None:
        for future in self._futures:
            if future.done() and future.exception() is not None:
                raise future.exception()  # type: ignore[misc]

    def commit(self) -> str:
        """Send the rest, complete the upload (or PUT a short stream whole); returns the object's URI."""
        if self._upload_id is None:
            with self.storage._errors("uploading to", self.full):
                self.storage.client.put_object(Bucket=self.storage.bucket, Key=self.full, Body=bytes(self._buffer),
                                               **self._lock_args)
        else:
            if self._buffer:
                self._submit(bytes(self._buffer))
                self._buffer.clear()
            for future in self._futures:
                future.result()
            parts = [self._parts[n] for n in sorted(self._parts)]
            with self.storage._errors("completing the upload of", self.full):
                self.storage.client.complete_multipart_upload(
                    Bucket=self.storage.bucket, Key=self.full, UploadId=self._upload_id,
                    MultipartUpload={"Parts": parts})
        self._done = True
        self._pool.shutdown()
        if self.lock is not None:
            self.storage.extend_lock(self.key, self.lock)  # some servers ignore lock arguments on multipart uploads
        return self.storage.uri(self.key)

    def abort(self) -> None:
        """Stop sending and delete the parts already stored; best effort (retention sweeps what is left)."""
        if self._done:
            return
        self._done = True
        for future in self._futures:
            future.cancel()
        self._pool.shutdown(wait=True)
        if self._upload_id is not None:
            with suppress(Exception):
                self.storage.client.abort_multipart_upload(Bucket=self.storage.bucket, Key=self.full,
                                                           UploadId=self._upload_id)

    def __enter__(self) -> S3StreamWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()
