"""A loopback HTTP proxy in front of the GCS emulator that relays each request or intercepts it.

The fault proxy and the permission proxy are this one relay with a different `intercept`:
a request is relayed to `upstream` unchanged, answered in its place (`Answer`), or its
connection is dropped before (`RESET`) or after (`LOST`) it reached the upstream server.
Bounded: it serves only while its context is open.
"""

from __future__ import annotations

import dataclasses
import http.client
import http.server
import re
import socket
import struct
import threading

_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}
RESET = "reset"  # the connection drops before the request reaches the server
LOST = "lost"  # the request takes effect upstream, then the connection drops before the answer


@dataclasses.dataclass(frozen=True)
class Request:
    method: str
    target: str  # path and query, as sent
    body: bytes | None
    content_type: str


@dataclasses.dataclass(frozen=True)
class Answer:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    payload: bytes


# The emulator writes an object's media link once, with the address of whoever created it (often
# another relay, closed since); GCS's links always reach GCS. So a relay points them at itself.
_MEDIA_LINK = re.compile(rb'("mediaLink":\s*")https?://[^/"]+')


class RelayProxy:
    """`with SomeProxy(upstream="127.0.0.1:9023") as proxy:` -> STORAGE_EMULATOR_HOST=http://<proxy.address>."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self._lock = threading.Lock()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def intercept(self, request: Request) -> Answer | str | None:
        """None relays the request; an Answer replaces the upstream's; RESET or LOST drop the connection."""
        return None

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host}:{port}"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def relay(self, request: Request, headers: dict[str, str]) -> Answer:
        upstream = http.client.HTTPConnection(self.upstream, timeout=60)
        try:
            upstream.request(request.method, request.target, body=request.body, headers=headers)
            response = upstream.getresponse()
            payload = _MEDIA_LINK.sub(rb"\1http://" + self.address.encode(), response.read())
            return Answer(response.status, response.reason, response.getheaders(), payload)
        finally:
            upstream.close()

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

            def _send(self, answer: Answer) -> None:
                self.send_response(answer.status, answer.reason)
                for key, value in answer.headers:
                    if key.lower() not in _HOP_HEADERS and key.lower() != "content-length":
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer.payload)))
                self.end_headers()
                self.wfile.write(answer.payload)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                request = Request(
                    self.command, self.path, self.rfile.read(length) if length else None, self.headers.get("Content-Type", "")
                )
                verdict = proxy.intercept(request)
                if isinstance(verdict, Answer):
                    self._send(verdict)
                    return
                if verdict == RESET:
                    self._drop_connection()
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
                answer = proxy.relay(request, headers)
                if verdict == LOST:
                    self._drop_connection()
                    return
                self._send(answer)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle

        return Handler
