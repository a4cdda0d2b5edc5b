"""A loopback HTTP proxy that makes a share of GCS API requests fail, for fault-injection tests.

Every `every`-th request fails, cycling through three faults real clients meet:
  503      the server answers 503 Service Unavailable without acting on the request;
  reset    the connection drops before the request reaches the server;
  lost     the request takes effect upstream, then the connection drops before the answer
           (the client cannot know it succeeded: retries must be idempotent).
Bounded: it serves only while its context is open and counts what it injected.

A chunk of a resumable upload (`PUT …upload_id=`) gets only the first two: after a lost
answer the client resends the chunk from its last confirmed offset, and the emulator
answers that overlap with 400 (it models no recovery of a session's persisted range), so
a "lost" chunk would test the emulator, not our code.
"""

from __future__ import annotations

import http.client
import http.server
import socket
import struct
import threading
from collections import Counter

FAULTS = ("503", "reset", "lost")
_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}


class FaultProxy:
    """`with FaultProxy(upstream="127.0.0.1:9023", every=5) as proxy:` -> proxy.address."""

    def __init__(self, upstream: str, every: int) -> None:
        self.upstream = upstream
        self.every = every
        self.requests = 0
        self.injected: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host}:{port}"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _next_fault(self, resumable_chunk: bool) -> str | None:
        with self._lock:
            self.requests += 1
            if self.requests % self.every:
                return None
            kinds = FAULTS[:2] if resumable_chunk else FAULTS
            fault = kinds[(self.requests // self.every) % len(kinds)]
            self.injected[fault] += 1
            return fault

    def _handler_class(self):
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def _drop_connection(self) -> None:
                # SO_LINGER 0: close with a TCP RST, as a failing load balancer does.
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length) if length else None
                fault = proxy._next_fault(resumable_chunk=self.command == "PUT" and "upload_id=" in self.path)
                if fault == "503":
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if fault == "reset":
                    self._drop_connection()
                    return
                upstream = http.client.HTTPConnection(proxy.upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                payload = response.read()
                upstream.close()
                if fault == "lost":
                    self._drop_connection()
                    return
                self.send_response(response.status, response.reason)
                for key, value in response.getheaders():
                    if key.lower() not in _HOP_HEADERS and key.lower() != "content-length":
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _relay

        return Handler
