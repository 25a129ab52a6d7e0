"""A bandwidth-limited TCP proxy on 127.0.0.1: a slow network link in front of a local server (e.g. moto's S3).

    with ThrottleProxy(upstream_port=9000, mbit_per_s=50) as proxy:
        endpoint = f"http://127.0.0.1:{proxy.port}"

The design decision: one token bucket per direction, shared by all
connections, so the *link* has the given speed (like an uplink to R2) however
many parallel connections a client opens; each direction of each connection
is a thread copying at most CHUNK bytes at a time, and at most
`max_connections` connections are served at once (further clients wait in the
listen backlog), so memory and threads are bounded. `mbit_per_s=None` forwards
at full speed. Stopping closes the listener and every open connection.
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType

CHUNK = 64 * 1024
BURST_SECONDS = 0.05  # a bucket holds this much transfer time: small bursts, smooth rate


class TokenBucket:
    """`rate` bytes per second, shared by the threads that call take()."""

    def __init__(self, rate: float):
        self.rate = rate
        self.capacity = max(CHUNK, rate * BURST_SECONDS)
        self._tokens = self.capacity
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def take(self, n: int) -> None:
        """Block until n bytes may be sent."""
        while True:
            with self._lock:
                now = time.monotonic()
                self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
                self._stamp = now
                if self._tokens >= n:
                    self._tokens -= n
                    return
                wait = (n - self._tokens) / self.rate
            time.sleep(wait)


class ThrottleProxy:
    def __init__(self, upstream_port: int, mbit_per_s: float | None = None, *, max_connections: int = 32,
                 upstream_host: str = "127.0.0.1"):
        self.upstream = (upstream_host, upstream_port)
        rate = mbit_per_s * 1_000_000 / 8 if mbit_per_s else None
        self._buckets = {"up": TokenBucket(rate), "down": TokenBucket(rate)} if rate else None
        self._slots = threading.BoundedSemaphore(max_connections)
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._stopped = threading.Event()
        self.bytes = {"up": 0, "down": 0}
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept, name="throttle-accept", daemon=True)
        self._acceptor.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stopped.is_set():
            if not self._slots.acquire(timeout=0.2):
                continue  # all slots busy: look at _stopped again
            try:
                client, _ = self._listener.accept()
            except OSError:
                self._slots.release()
                return  # the listener was closed by stop()
            try:
                upstream = socket.create_connection(self.upstream, timeout=10)
                upstream.settimeout(None)
            except OSError:
                client.close()
                self._slots.release()
                continue
            with self._lock:
                self._open |= {client, upstream}
            done = threading.Barrier(2, action=lambda c=client, u=upstream: self._close(c, u))
            for src, dst, way in ((client, upstream, "up"), (upstream, client, "down")):
                threading.Thread(target=self._pipe, args=(src, dst, way, done), name=f"throttle-{way}",
                                 daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, way: str, done: threading.Barrier) -> None:
        bucket = self._buckets[way] if self._buckets else None
        try:
            while data := src.recv(CHUNK):
                if bucket:
                    bucket.take(len(data))
                dst.sendall(data)
                self.bytes[way] += len(data)  # one writer per direction and connection: approximate totals are fine
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)  # pass the end of the stream on (HTTP keep-alive ends cleanly)
            except OSError:
                pass
            try:
                done.wait(timeout=600)
            except threading.BrokenBarrierError:
                self._close(src, dst)

    def _close(self, *socks: socket.socket) -> None:
        with self._lock:
            fresh = [s for s in socks if s in self._open]
            self._open -= set(fresh)
        for sock in fresh:
            sock.close()
        if fresh:
            self._slots.release()

    def stop(self) -> None:
        self._stopped.set()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close() alone would not
        except OSError:
            pass
        self._listener.close()
        with self._lock:
            socks, self._open = list(self._open), set()
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        self._acceptor.join(timeout=5)

    def __enter__(self) -> "ThrottleProxy":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
