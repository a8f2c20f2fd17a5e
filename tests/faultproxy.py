"""A small HTTP-aware TCP proxy that injects real network faults.

It sits between a storage client and an emulator on 127.0.0.1 and, for the
requests a rule matches, either answers ``503 Service Unavailable``, drops the
connection half-way through the transfer (request body or response body, with
a TCP reset), or stalls the response until the client's read timeout fires.
Every other byte is relayed unchanged. Requests are parsed (head +
Content-Length) so that faults hit individual requests on keep-alive
connections; a chunked request body makes the rest of that connection a plain
pipe.

    with FaultProxy(upstream_port) as proxy:
        proxy.add("503", times=3)                       # the first 3 requests
        proxy.add("reset", times=2, method="PUT")       # 2 uploads cut mid-body
        proxy.add("cut", times=1, method="GET")         # 1 response cut after 200 bytes
        proxy.add("stall", times=None, method="GET")    # every download hangs

With ``gcs_preconditions=True`` the proxy also honours GCS's create-if-absent
precondition (``ifGenerationMatch=0`` on a single-request upload), which real
GCS enforces and gcp-storage-emulator ignores: such uploads are serialised,
and one whose object already exists gets ``412 Precondition Failed``.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType

_BUF = 64 * 1024


@dataclass
class Rule:
    """Inject ``kind`` into the next ``times`` matching requests (None: forever)."""

    kind: str  # "503" | "reset" (mid request body) | "cut" (mid response) | "stall"
    times: int | None
    method: str | None = None
    path_contains: str | None = None
    path_excludes: str | None = None
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.method and method != self.method:
            return False
        if self.path_excludes and self.path_excludes in path:
            return False
        return not (self.path_contains and self.path_contains not in path)


@dataclass
class FaultProxy:
    """Proxy 127.0.0.1:<port> -> 127.0.0.1:<upstream_port> with fault rules."""

    upstream_port: int
    stall_seconds: float = 30.0
    rules: list[Rule] = field(default_factory=list)
    injected: list[str] = field(default_factory=list)
    requests: int = 0
    gcs_preconditions: bool = False

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._create_lock = threading.Lock()
        self._server = socket.socket()
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(64)
        self.port = int(self._server.getsockname()[1])
        self._closed = threading.Event()
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True, name="faultproxy").start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add(self, kind: str, times: int | None = 1, **match: str) -> Rule:
        assert kind in ("503", "reset", "cut", "stall"), kind
        rule = Rule(kind, times, **match)
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()

    def close(self) -> None:
        """Stop listening (new connections are refused) and reset every open connection."""
        self._closed.set()
        with contextlib.suppress(OSError):
            # Wakes the accept() blocked in another thread; a bare close() would leave
            # the socket listening until that accept() returned with one more client.
            self._server.shutdown(socket.SHUT_RDWR)
        self._server.close()
        with self._lock:
            for sock in self._conns:
                _abort(sock)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- plumbing ---------------------------------------------------------------
    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _pick(self, method: str, path: str) -> str | None:
        with self._lock:
            self.requests += 1
            for rule in self.rules:
                if rule.matches(method, path):
                    rule.hits += 1
                    self.injected.append(f"{rule.kind} {method} {path.split('?')[0]}")
                    return rule.kind
        return None

    def _serve(self, client: socket.socket) -> None:
        conn = _Conn(client, self.upstream_port, self.stall_seconds)
        with self._lock:
            self._conns.append(client)
        try:
            self._requests(conn)
        except OSError:
            pass
        finally:
            conn.close()

    def _requests(self, conn: _Conn) -> None:
        client = conn.client
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                data = client.recv(_BUF)
                if not data:
                    return
                buf += data
            head, _, buf = buf.partition(b"\r\n\r\n")
            method, path, headers = _parse_head(head)
            length = int(headers.get("content-length", "0") or 0)
            fault = self._pick(method, path)
            if fault is None and self._create_if_absent(method, path):
                body, buf = _read_body(client, buf, length)
                self._conditional_create(client, method, path, headers, body)
                return
            if fault == "503":
                if headers.get("expect", "").lower() != "100-continue":
                    buf = _drain(client, buf, length)
                client.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                    b"Retry-After: 0\r\nConnection: close\r\n\r\n"
                )
                return
            upstream = conn.upstream()
            reset_body = fault == "reset" and length > 1
            # Arm the response pump before the request leaves: a fast upstream could
            # otherwise answer before the fault is in place (and hit the next response).
            if fault in ("reset", "cut") and not reset_body:
                conn.pump.cut_after(200)
            if fault == "stall":
                conn.pump.stall()
            upstream.sendall(head + b"\r\n\r\n")
            if headers.get("transfer-encoding", "").lower() == "chunked":
                upstream.sendall(buf)
                _pipe(client, upstream)
                return
            if reset_body:  # cut the request body half-way
                _forward(client, upstream, buf, length // 2)
                return  # close(): both sides reset mid-body
            buf = _forward(client, upstream, buf, length)

    # -- GCS create-if-absent (the emulator ignores ifGenerationMatch) ----------
    def _create_if_absent(self, method: str, path: str) -> bool:
        return self.gcs_preconditions and method == "POST" and "ifGenerationMatch=0" in path

    def _conditional_create(
        self, client: socket.socket, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> None:
        """Check and create under one lock, as the real service does atomically."""
        bucket = re.search(r"/b/([^/?]+)/o", path)
        name = re.search(rb'"name"\s*:\s*"((?:[^"\\]|\\.)*)"', body)
        assert bucket and name, f"cannot read the object name of {path}"
        obj = json.loads(b'"' + name.group(1) + b'"')
        send = {k: v for k, v in headers.items() if k not in _HOP_HEADERS}
        with self._create_lock:
            up = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=30)
            quoted = _quote(obj)
            up.request("GET", f"/storage/v1/b/{bucket.group(1)}/o/{quoted}")
            exists = up.getresponse()
            exists.read()
            up.close()
            if exists.status == 200:
                reply = json.dumps({"error": {"code": 412, "message": "Precondition Failed"}})
                _reply(client, 412, "Precondition Failed", {}, reply.encode())
                return
            up = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=30)
            up.request(method, path, body=body, headers=send)
            answer = up.getresponse()
            data = answer.read()
            up.close()
        kept = {k: v for k, v in answer.getheaders() if k.lower() not in _HOP_HEADERS}
        _reply(client, answer.status, answer.reason, kept, data)


_HOP_HEADERS = {"connection", "content-length", "transfer-encoding", "keep-alive", "host"}


def _quote(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")


def _read_body(client: socket.socket, buf: bytes, length: int) -> tuple[bytes, bytes]:
    while len(buf) < length:
        data = client.recv(_BUF)
        if not data:
            break
        buf += data
    return buf[:length], buf[length:]


def _reply(
    client: socket.socket, status: int, reason: str, headers: dict[str, str], body: bytes
) -> None:
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
    client.sendall("\r\n".join(lines).encode("latin-1") + body)


class _Conn:
    """One client connection and, once a request arrives, its upstream connection."""

    def __init__(self, client: socket.socket, upstream_port: int, stall_s: float) -> None:
        self.client = client
        self.port = upstream_port
        self.pump = _Pump(client, stall_s)
        self._up: socket.socket | None = None

    def upstream(self) -> socket.socket:
        if self._up is None:
            self._up = socket.create_connection(("127.0.0.1", self.port))
            self.pump.up = self._up
            threading.Thread(target=self.pump.run, daemon=True).start()
        return self._up

    def close(self) -> None:
        if self.pump.stalling:
            return  # the pump closes both once the stall is over
        _abort(self.client)
        if self._up is not None:
            _abort(self._up)


class _Pump:
    """Relays upstream -> client; can cut a response mid-way or hold it back."""

    def __init__(self, client: socket.socket, stall_s: float) -> None:
        self.up: socket.socket | None = None
        self.client = client
        self.stall_s = stall_s
        self.budget: int | None = None
        self.stalling = False

    def cut_after(self, n: int) -> None:
        self.budget = n

    def stall(self) -> None:
        self.stalling = True

    def run(self) -> None:
        assert self.up is not None
        try:
            while True:
                data = self.up.recv(_BUF)
                if not data:
                    break
                if self.stalling:
                    time.sleep(self.stall_s)  # the client gives up first
                    break
                if self.budget is not None:
                    self.client.sendall(data[: self.budget])
                    break
                self.client.sendall(data)
        except OSError:
            pass
        _abort(self.client)
        _abort(self.up)


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return parts[0], parts[1] if len(parts) > 1 else "/", headers


def _drain(client: socket.socket, buf: bytes, length: int) -> bytes:
    while len(buf) < length:
        data = client.recv(_BUF)
        if not data:
            break
        buf += data
    return buf[length:]


def _forward(client: socket.socket, upstream: socket.socket, buf: bytes, length: int) -> bytes:
    """Send ``length`` body bytes upstream (``buf`` first); return what follows them."""
    first, rest = buf[:length], buf[length:]
    upstream.sendall(first)
    left = length - len(first)
    while left > 0:
        data = client.recv(min(_BUF, left))
        if not data:
            raise OSError("client closed mid-body")
        upstream.sendall(data)
        left -= len(data)
    return rest


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    while data := src.recv(_BUF):
        dst.sendall(data)


def _abort(sock: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0), like a crashed peer or a dropped link.

    shutdown() first: it wakes a thread blocked in recv() on the same socket, which
    a bare close() would not (the peer would then wait forever).
    """
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        sock.close()
