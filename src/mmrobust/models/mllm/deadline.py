"""A total deadline per HTTP attempt: connect, headers and body together.

``requests`` timeouts bound each socket read, so a server that trickles one byte a second holds a
request forever. Here a :class:`Watchdog` timer shuts the attempt's socket when its deadline
passes (or when the caller cancels), which wakes a read blocked in another thread; connections
made through :func:`watched_adapter_class` hand their socket to the watchdog of the attempt
running on their thread.
"""
from __future__ import annotations

import functools
import socket
import threading
from typing import Any

CURRENT = threading.local()  # the watchdog of the attempt running on this thread


class Retryable(Exception):
    """A failure worth another try (carries an optional server-suggested delay)."""

    def __init__(self, msg: str, retry_after: float | None = None) -> None:
        super().__init__(msg)
        self.retry_after = retry_after


class Fatal(Exception):
    """A failure that another try will not fix (bad request, auth, unknown model, unreadable image)."""


class Control:
    """Cancellation shared by one ``generate`` call: a stop flag and the watchdogs in flight."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.dogs: set[Watchdog] = set()
        self.lock = threading.Lock()

    def cancel(self) -> None:
        self.stop.set()
        with self.lock:
            dogs = list(self.dogs)
        for dog in dogs:
            dog.abort("cancelled")


class Watchdog:
    """Shuts the socket of one attempt when ``seconds`` pass (or on cancel), so a server that trickles
    its headers or body one byte at a time cannot hold the attempt: a per-read timeout never fires
    while bytes keep coming. The HTTP connection registers its socket through ``CURRENT``."""

    def __init__(self, seconds: float, ctl: Control) -> None:
        self.seconds, self.ctl = seconds, ctl
        self.reason: str | None = None
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._open = True
        self._timer = threading.Timer(seconds, self.abort, args=("deadline",))
        self._timer.daemon = True

    def __enter__(self) -> "Watchdog":
        with self.ctl.lock:
            self.ctl.dogs.add(self)
        if self.ctl.stop.is_set():
            self.abort("cancelled")
        CURRENT.dog = self
        self._timer.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._timer.cancel()
        CURRENT.dog = None
        with self._lock:
            self._open, self._socks = False, []
        with self.ctl.lock:
            self.ctl.dogs.discard(self)

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            if self.reason is not None:
                shut_socket(sock)
            elif self._open:
                self._socks.append(sock)

    def abort(self, reason: str) -> None:
        with self._lock:
            if not self._open or self.reason is not None:
                return
            self.reason = reason
            for sock in self._socks:
                shut_socket(sock)

    def check(self) -> None:
        """Raise the right error if this attempt was cut (deadline or cancel)."""
        if self.reason == "deadline":
            raise Retryable(f"no complete reply within the {self.seconds:g}s deadline (timeout_s); the server "
                             "is slow or trickling its reply, raise timeout_s if it is just slow")
        if self.reason == "cancelled":
            raise Fatal("cancelled")


def shut_socket(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)  # wakes a read blocked in another thread
    except OSError:
        pass


@functools.lru_cache(maxsize=None)
def watched_adapter_class() -> type:
    """A requests transport whose connections hand their socket to the running attempt's watchdog
    before waiting for the reply (built on first use, so importing this module stays cheap)."""
    from requests.adapters import HTTPAdapter
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    def watched(base: type) -> type:
        class Watched(base):  # type: ignore[misc, valid-type]
            def getresponse(self, *args: Any, **kwargs: Any) -> Any:
                dog = getattr(CURRENT, "dog", None)
                if dog is not None and self.sock is not None:
                    dog.watch(self.sock)
                return super().getresponse(*args, **kwargs)
        return Watched

    pools = {"http": type("Pool", (HTTPConnectionPool,), {"ConnectionCls": watched(HTTPConnection)}),
             "https": type("SPool", (HTTPSConnectionPool,), {"ConnectionCls": watched(HTTPSConnection)})}

    class WatchedAdapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = pools

        def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
            manager = super().proxy_manager_for(proxy, **kwargs)
            if not proxy.lower().startswith("socks"):  # SOCKS managers bring their own connections
                manager.pool_classes_by_scheme = pools
            return manager

    return WatchedAdapter


def read_capped(resp: Any, limit: int, dog: Watchdog) -> bytes:
    """The whole body, refusing more than ``limit`` bytes; a body cut by the watchdog is an error."""
    buf = bytearray()
    for chunk in resp.iter_content(chunk_size=64 * 1024):
        buf += chunk
        if len(buf) > limit:
            raise Fatal(f"reply larger than {limit} bytes; is this a chat-completions server? (raise "
                         "max_body_bytes if it is)")
        dog.check()
    dog.check()  # a close-delimited body cut short ends like a complete one
    return bytes(buf)
