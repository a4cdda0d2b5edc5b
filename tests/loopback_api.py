"""What the stubs of cloud APIs on loopback share: JSON in and out, a server thread per test."""

import contextlib
import http.server
import json
import threading
from collections.abc import Iterator


class JsonHandler(http.server.BaseHTTPRequestHandler):
    """A request handler that reads a JSON body and answers JSON, quietly."""

    def read_json(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length)) if length else {}

    def send_json(self, answer: dict) -> None:
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):  # keep pytest output clean
        pass


class RecordingServer(http.server.ThreadingHTTPServer):
    """A loopback server that keeps every request (method, path, JSON body) its handler records;
    `existing` is what the API holds before the test, for its handler's list calls."""

    def __init__(self, handler: type[JsonHandler], existing: list[dict]):
        super().__init__(("127.0.0.1", 0), handler)
        self.requests: list[tuple[str, str, dict]] = []
        self.existing = existing

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@contextlib.contextmanager
def serving(server: http.server.HTTPServer) -> Iterator[http.server.HTTPServer]:
    """The server answering on a daemon thread for the duration of a test."""
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
