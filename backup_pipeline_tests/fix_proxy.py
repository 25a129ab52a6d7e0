"""A TCP proxy on 127.0.0.1 that can cut every connection on demand: a network failing at a chosen moment.

`proxy_to(port)` forwards a free local port to 127.0.0.1:port, one thread
pair per connection. `cut()` resets every open connection and closes the
listening socket, so new connections are refused as by a dead endpoint;
`cut_when(pattern)` does it the moment a client sends bytes matching the
regex (e.g. the request line of one download), and `restore()` listens on
the same port again. The proxy stops at teardown.
"""

import re
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import pytest

_CHUNK = 64 * 1024


class TcpProxy:
    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._trigger: re.Pattern[bytes] | None = None
        self.cuts = 0
        self.port = self._listen(0)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _listen(self, port: int) -> int:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), name="proxy-accept", daemon=True).start()
        return listener.getsockname()[1]

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # the listener was closed: cut or stopped
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=10)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns |= {client, upstream}
            for src, dst, watch in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pipe, args=(src, dst, watch), name="proxy-pipe", daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, watch: bool) -> None:
        try:
            while data := src.recv(_CHUNK):
                if watch and self._trigger is not None and self._trigger.search(data):
                    self.cut()
                    return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                self._drop(sock, reset=False)

    def _drop(self, sock: socket.socket, *, reset: bool) -> None:
        with self._lock:
            self._conns.discard(sock)
        try:
            if reset:  # RST instead of FIN: the peer sees "connection reset", as when a link dies
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.shutdown(socket.SHUT_RDWR)  # wakes the pipe thread blocked in recv on it
        except OSError:
            pass
        try:
            sock.close()
        except OSError:
            pass

    def cut(self) -> None:
        """Reset every open connection and refuse new ones until restore()."""
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = set(self._conns), set()
            self._trigger = None
            self.cuts += 1
        if listener is not None:
            listener.close()
        for sock in conns:
            self._drop(sock, reset=True)

    def cut_when(self, pattern: bytes) -> None:
        """Cut as soon as a client sends data matching the regex pattern (the data is not forwarded)."""
        self._trigger = re.compile(pattern)

    def restore(self) -> None:
        if self._listener is None:
            self._listen(self.port)

    def stop(self) -> None:
        self.cut()


@pytest.fixture
def proxy_to() -> Iterator[Callable[[int | str], TcpProxy]]:
    """proxy_to(port or http URL) -> a TcpProxy in front of it on 127.0.0.1; all stopped at teardown."""
    proxies: list[TcpProxy] = []

    def start(upstream: int | str) -> TcpProxy:
        port = upstream if isinstance(upstream, int) else urlsplit(upstream).port
        proxy = TcpProxy(port)
        proxies.append(proxy)
        return proxy

    yield start
    for proxy in proxies:
        proxy.stop()
