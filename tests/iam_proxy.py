"""A loopback proxy in front of the GCS emulator that enforces one account's bucket permissions.

    with PermissionProxy(upstream="127.0.0.1:9023", allowed={"p-tables": {"storage.objects.get"}}) as proxy:
        ...  # STORAGE_EMULATOR_HOST=http://<proxy.address>
    assert proxy.denied == []

Each request of the GCS JSON API is mapped to the IAM permissions Cloud Storage checks for it
(https://cloud.google.com/storage/docs/access-control/iam-json): reading an object needs
storage.objects.get, listing storage.objects.list, an upload storage.objects.create and, when
it replaces a live object, storage.objects.delete too; a copy or rewrite needs get on the
source and create (+ delete) on the target; a batch request is checked part by part. A request
needing a permission the account lacks is answered 403, as Cloud Storage answers it, and kept
in `denied`; the others are relayed to the emulator. `used` collects the permissions exercised.

google-cloud-storage (3.17) also reads each bucket's metadata in a background thread, for its
telemetry only, and falls back to defaults on 403 (`_bucket_metadata_cache.py`). Without
storage.buckets.get that read is answered 403 too, but kept in `optional_denied`: a task that
really needed it fails on its own, which the caller sees in its exit code.
"""

from __future__ import annotations

import email
import http.client
import json
import re
import urllib.parse

from tests.relay_proxy import Answer, RelayProxy, Request

_BUCKET = r"(?P<bucket>[^/?]+)"
_OBJECT = r"(?P<object>[^?]+?)"
# (method, path pattern, what it does); the first match wins, so longer shapes come first.
_ROUTES = [
    (
        "POST",
        rf"^(?:/storage/v1)?/b/{_BUCKET}/o/{_OBJECT}/(?:copyTo|rewriteTo)/b/(?P<target_bucket>[^/]+)/o/(?P<target>[^?]+)$",
        "copy",
    ),
    ("POST", rf"^(?:/storage/v1)?/b/{_BUCKET}/o/{_OBJECT}/compose$", "compose"),
    ("POST", rf"^/upload/storage/v1/b/{_BUCKET}/o$", "upload"),
    ("PUT", rf"^/upload/storage/v1/b/{_BUCKET}/o$", "upload_chunk"),
    ("GET", rf"^(?:/download)?(?:/storage/v1)?/b/{_BUCKET}/o/{_OBJECT}$", "storage.objects.get"),
    ("GET", rf"^(?:/storage/v1)?/b/{_BUCKET}/o$", "storage.objects.list"),
    ("DELETE", rf"^(?:/storage/v1)?/b/{_BUCKET}/o/{_OBJECT}$", "storage.objects.delete"),
    ("PATCH", rf"^(?:/storage/v1)?/b/{_BUCKET}/o/{_OBJECT}$", "storage.objects.update"),
    ("PUT", rf"^(?:/storage/v1)?/b/{_BUCKET}/o/{_OBJECT}$", "storage.objects.update"),
    ("GET", rf"^(?:/storage/v1)?/b/{_BUCKET}$", "storage.buckets.get"),
    ("POST", r"^(?:/storage/v1)?/b$", "storage.buckets.create"),
    ("DELETE", rf"^(?:/storage/v1)?/b/{_BUCKET}$", "storage.buckets.delete"),
    ("PATCH", rf"^(?:/storage/v1)?/b/{_BUCKET}$", "storage.buckets.update"),
]


class PermissionProxy(RelayProxy):
    """Relays GCS API requests that `allowed` (bucket -> permissions) admits; answers the rest 403."""

    def __init__(self, upstream: str, allowed: dict[str, set[str]]) -> None:
        super().__init__(upstream)
        self.allowed = allowed
        self.denied: list[str] = []  # "<METHOD> <path>: needs <permission> on <bucket>"
        self.optional_denied: list[str] = []  # the client's own bucket-metadata reads
        self.used: set[tuple[str, str]] = set()  # (bucket, permission)

    def intercept(self, request: Request) -> Answer | None:
        denial = self.check(request.method, request.target, request.body, request.content_type)
        if not denial:
            return None
        error = {
            "error": {
                "code": 403,
                "message": f"anonymous caller does not have access: {denial}",
                "errors": [{"reason": "forbidden", "message": denial}],
            }
        }
        return Answer(403, "Forbidden", [("Content-Type", "application/json")], json.dumps(error).encode())

    # --- what a request needs ---------------------------------------------------------------

    def required(self, method: str, target: str, body: bytes | None, content_type: str) -> list[tuple[str, str]]:
        """(bucket, permission) pairs Cloud Storage checks for one request."""
        url = urllib.parse.urlsplit(target)
        path, query = urllib.parse.unquote(url.path), urllib.parse.parse_qs(url.query)
        if method == "POST" and path.startswith("/batch/"):
            return [need for part in _batch_parts(body, content_type) for need in self.required(*part)]
        for route_method, pattern, action in _ROUTES:
            match = re.match(pattern, path) if method == route_method else None
            if not match:
                continue
            groups = match.groupdict()
            bucket = groups.get("bucket")
            if action == "copy":
                return [(bucket, "storage.objects.get"), *self._create(groups["target_bucket"], groups["target"], query)]
            if action == "compose":
                return self._create(bucket, groups["object"], query) + [(bucket, "storage.objects.get")]
            if action == "upload":
                return self._create(bucket, _upload_name(query, body, content_type), query)
            if action == "upload_chunk":
                return []  # a chunk of a resumable upload: checked when the upload was started
            return [(bucket or "", action)]
        return [("", f"unknown request {method} {path}")]  # never relayed: the map must know it

    def _create(self, bucket: str, name: str, query: dict) -> list[tuple[str, str]]:
        needs = [(bucket, "storage.objects.create")]
        create_only = query.get("ifGenerationMatch") == ["0"]
        if not create_only and self._exists(bucket, name):
            needs.append((bucket, "storage.objects.delete"))  # an overwrite deletes the live version
        return needs

    def _exists(self, bucket: str, name: str) -> bool:
        connection = http.client.HTTPConnection(self.upstream, timeout=30)
        try:
            connection.request("GET", f"/storage/v1/b/{bucket}/o/{urllib.parse.quote(name, safe='')}")
            response = connection.getresponse()
            response.read()
            return response.status == 200
        finally:
            connection.close()

    def check(self, method: str, target: str, body: bytes | None, content_type: str) -> str | None:
        """The first missing permission as a message (recorded), or None when all are held."""
        for bucket, permission in self.required(method, target, body, content_type):
            with self._lock:
                if permission in self.allowed.get(bucket, set()):
                    self.used.add((bucket, permission))
                    continue
                message = f"{method} {urllib.parse.urlsplit(target).path}: needs {permission} on {bucket or '-'}"
                optional = permission == "storage.buckets.get" and method == "GET"
                (self.optional_denied if optional else self.denied).append(message)
                return message
        return None


def _multipart(body: bytes, content_type: str) -> list[email.message.Message]:
    message = email.message_from_bytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    return message.get_payload() if message.is_multipart() else []


def _upload_name(query: dict, body: bytes | None, content_type: str) -> str:
    """The object an upload creates: the `name` parameter, else the JSON metadata in the body."""
    if "name" in query:
        return query["name"][0]
    if content_type.startswith("multipart/"):
        metadata = _multipart(body or b"", content_type)[0].get_payload(decode=True)
    else:
        metadata = body or b"{}"
    return json.loads(metadata)["name"]


def _batch_parts(body: bytes | None, content_type: str) -> list[tuple[str, str, None, str]]:
    """The sub-requests of a JSON API batch (each part is an HTTP request line and headers)."""
    parts = []
    for part in _multipart(body or b"", content_type):
        request_line = part.get_payload(decode=True).decode().lstrip().splitlines()[0]
        method, target, _ = request_line.split(" ", 2)
        parts.append((method, urllib.parse.urlsplit(target)._replace(scheme="", netloc="").geturl(), None, ""))
    return parts
