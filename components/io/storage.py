"""Scheme-agnostic storage: every location is a URI, a local path or `gs://bucket/key`.

This module is the only place that looks at a URI's scheme. Local paths use the file system;
`gs://` uses the google-cloud-storage client with retries on transient errors (429, 5xx,
dropped connections), resumable uploads for large objects and generation preconditions for
create-only writes; `http(s)://` is readable only (public data set mirrors).

Credentials: Application Default Credentials, or anonymous access when
`STORAGE_EMULATOR_HOST` points the client at a GCS API emulator (tests, local runs) so
that nothing stalls looking for credentials that cannot exist there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import functools
import io
import os
import re
import secrets
import shutil
import stat
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import IO

from components.errors import InputError

GCS_SCHEME = "gs://"
FILE_SCHEME = "file://"
HTTP_SCHEMES = ("http://", "https://")
_WILDCARDS = "*?["
# Uploads above this size go through the resumable protocol, so a dropped connection
# resumes from the last chunk instead of resending everything.
RESUMABLE_CHUNK_BYTES = 8 * 1024 * 1024
_HTTP_TIMEOUT_S = 60


# Anything that starts like `scheme:` is meant as a URI, never as a local folder named `gs:`.
_SCHEME_LIKE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
# The characters of GCS bucket names: lowercase letters, digits, '-', '_' and '.', no '/'.
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


class StorageConflictError(Exception):
    """A create-only write found another writer's object already there."""


def check_uri(uri: str) -> str:
    """The URI unchanged when it is a local path, gs://bucket[/key] or http(s)://host/...;
    otherwise an InputError saying what is wrong with it. Every entry of this module checks it,
    so a typo such as `gs:/b/x`, `GS://b/x` or `s3://b/x` never becomes a local folder."""
    if not uri:
        raise InputError("empty location: expected a local path, gs://bucket/... or http(s)://...")
    if uri.startswith(GCS_SCHEME):
        bucket = uri[len(GCS_SCHEME) :].partition("/")[0]
        if not bucket:
            raise InputError(f"{uri}: no bucket name in the gs:// URI (expected gs://bucket/...)")
        if not _BUCKET_NAME.match(bucket):
            raise InputError(f"{uri}: {bucket!r} is not a valid bucket name")
        return uri
    if uri.startswith(HTTP_SCHEMES):
        if not uri.partition("://")[2].partition("/")[0]:
            raise InputError(f"{uri}: no host in the URL")
        return uri
    if _SCHEME_LIKE.match(uri):
        raise InputError(f"{uri}: unknown or malformed scheme; expected a local path, gs://bucket/... or http(s)://...")
    return uri


def child(base: str, name: str) -> str:
    """`base/name` for a name read from data (a manifest, a pointer file): one plain segment,
    never a path that leaves `base` (`..`, `/x`, `a/b`) or a URI of its own."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or _SCHEME_LIKE.match(name):
        raise InputError(f"{join(base, '')}: {name!r} is not a plain name inside this folder")
    return join(base, name)


def _is_gcs(uri: str) -> bool:
    return check_uri(uri).startswith(GCS_SCHEME)


def _is_http(uri: str) -> bool:
    return check_uri(uri).startswith(HTTP_SCHEMES)


def is_remote(uri: str) -> bool:
    """True for object-store or web URIs, False for local paths."""
    return _is_gcs(uri) or _is_http(uri)


def join(base: str, *parts: str) -> str:
    """Joins URI segments with exactly one '/' between them."""
    joined = base.rstrip("/")
    for part in parts:
        joined = f"{joined}/{part.strip('/')}"
    return joined


def absolute_uri(uri: str) -> str:
    """The URI as lineage that holds anywhere: `file:///abs/path` for a local path, else unchanged.

    The path is kept as it is (not percent-encoded), so a glob stays readable and
    from_absolute_uri gives back exactly the path."""
    if uri.startswith(FILE_SCHEME) or is_remote(uri):
        return uri
    return FILE_SCHEME + os.path.abspath(uri)


def from_absolute_uri(uri: str) -> str:
    """The location this module opens for an absolute URI: the local path of a `file://` URI."""
    return uri[len(FILE_SCHEME) :] if uri.startswith(FILE_SCHEME) else uri


def basename(uri: str) -> str:
    """The last segment of a URI."""
    return uri.rstrip("/").rsplit("/", 1)[-1]


def dirname(uri: str) -> str:
    """The URI of the folder holding a file or object."""
    return uri.rstrip("/").rsplit("/", 1)[0]


# --- Google Cloud Storage -----------------------------------------------------------------


@functools.cache
def _gcs_client():  # -> google.cloud.storage.Client
    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project="local-emulator", credentials=AnonymousCredentials())
    return storage.Client()


def _split_gcs(uri: str) -> tuple[str, str]:
    bucket, _, key = check_uri(uri)[len(GCS_SCHEME) :].partition("/")
    return bucket, key


def _blob(uri: str):  # -> google.cloud.storage.Blob
    bucket, key = _split_gcs(uri)
    blob = _gcs_client().bucket(bucket).blob(key)
    blob.chunk_size = RESUMABLE_CHUNK_BYTES
    return blob


def gcs_blob(uri: str):  # -> google.cloud.storage.Blob
    """The Blob of a gs:// URI, for conditional writes on generations (components.io.lease)."""
    return _blob(uri)


def gcs_retry():
    """The retry policy of every call here (conditional writes are retried only with their precondition)."""
    return _retry()


def _retry():
    # Every write here is idempotent (same bytes to the same name, or guarded by a
    # generation precondition that is re-checked below), so all calls may be retried.
    from google.cloud.storage.retry import DEFAULT_RETRY

    return DEFAULT_RETRY


def _gcs_not_found():
    from google.api_core.exceptions import NotFound

    return NotFound


def _missing(uri: str) -> InputError:
    """A not-found answer, named precisely: a missing bucket is not a missing file."""
    if _is_gcs(uri):
        _require_bucket(uri)
    return InputError(f"{uri}: file not found")


def _require_bucket(uri: str) -> None:
    """An InputError naming the bucket of a gs:// URI when that bucket does not exist."""
    bucket, _ = _split_gcs(uri)
    if not _gcs_client().bucket(bucket).exists(retry=_retry()):
        raise InputError(f"{uri}: bucket gs://{bucket} does not exist")


def arrow_filesystem(uri: str):  # -> tuple[pyarrow.fs.FileSystem, str]
    """A pyarrow file system and the path on it for a URI, for Arrow readers (datasets, Parquet).

    gs:// uses Arrow's own GCS client: anonymous over plain HTTP against the emulator named by
    STORAGE_EMULATOR_HOST, Application Default Credentials otherwise.
    """
    from pyarrow import fs

    if _is_gcs(uri):
        emulator = os.environ.get("STORAGE_EMULATOR_HOST")
        if emulator:
            scheme, _, host = emulator.rpartition("://")
            gcs = fs.GcsFileSystem(anonymous=True, scheme=scheme or "http", endpoint_override=host.rstrip("/"))
        else:
            gcs = fs.GcsFileSystem()
        return gcs, uri[len(GCS_SCHEME) :].rstrip("/")
    if _is_http(uri):
        raise InputError(f"{uri}: http(s) locations cannot be opened as Arrow file systems")
    return fs.LocalFileSystem(), os.path.abspath(uri)


# --- Reading ------------------------------------------------------------------------------


def exists(uri: str) -> bool:
    """True when an object or file exists at the URI; a gs:// URI whose bucket is missing is an InputError."""
    if _is_gcs(uri):
        if _blob(uri).exists(retry=_retry()):
            return True
        _require_bucket(uri)  # a typo in the bucket name must not read as "no such file"
        return False
    if _is_http(uri):
        try:
            request = urllib.request.Request(uri, method="HEAD")
            with urllib.request.urlopen(request, timeout=_HTTP_TIMEOUT_S):
                return True
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return False
            raise _http_input_error(uri, error) from error
        except urllib.error.URLError as error:
            raise _http_input_error(uri, error) from error
    return os.path.isfile(uri)


def read_bytes(uri: str, *, max_bytes: int | None = None) -> bytes:
    """The whole content of a file or object; a missing one is an InputError naming it.

    With max_bytes (small files read from data: summaries, pointers), at most that many bytes
    are read, and a larger file is an InputError that names it without echoing its content; so
    is, locally, a symbolic link (which could show another file's content)."""
    try:
        if _is_gcs(uri):
            data = _read_gcs(uri, max_bytes)
        elif _is_http(uri):
            with urllib.request.urlopen(uri, timeout=_HTTP_TIMEOUT_S) as response:
                data = response.read() if max_bytes is None else response.read(max_bytes + 1)
        else:
            with open(uri, "rb", opener=None if max_bytes is None else _open_no_follow) as file:
                data = file.read() if max_bytes is None else file.read(max_bytes + 1)
    except (FileNotFoundError, _gcs_not_found()) as error:
        raise _missing(uri) from error
    except urllib.error.URLError as error:  # HTTPError is one
        raise _http_input_error(uri, error) from error
    except IsADirectoryError as error:
        raise InputError(f"{uri}: is a directory, expected a file") from error
    except OSError as error:
        if error.errno == errno.ELOOP:  # O_NOFOLLOW met a link
            raise InputError(f"{uri}: is a symbolic link, expected a regular file; not read") from error
        raise
    if max_bytes is not None and len(data) > max_bytes:
        raise _too_large(uri, max_bytes)
    return data


def _open_no_follow(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW)


def _read_gcs(uri: str, max_bytes: int | None) -> bytes:
    if max_bytes is None:
        return _blob(uri).download_as_bytes(retry=_retry())
    data = read_snapshot(uri, max_bytes=max_bytes).data  # the size first: an oversized object is never downloaded
    if data is None:
        raise _missing(uri)
    return data


def _download_generation(uri: str, generation: int) -> bytes:
    """Exactly one generation of an object. A fresh Blob: a reloaded one would download from the
    media link in the server's answer instead of the client's endpoint (a proxy, an emulator)."""
    return _blob(uri).download_as_bytes(if_generation_match=generation, retry=_retry())


def _too_large(uri: str, max_bytes: int) -> InputError:
    return InputError(f"{uri}: larger than the {max_bytes} bytes such a file can have")


@contextlib.contextmanager
def open_read(uri: str) -> Iterator[IO[bytes]]:
    """A binary stream over a file or object, read in chunks (memory stays bounded)."""
    try:
        if _is_gcs(uri):
            blob = _blob(uri)
            # Reload first: a missing object fails here, and an empty one needs no ranged read
            # (which the GCS API answers with 416, the emulator with a malformed Content-Range).
            blob.reload(retry=_retry())
            stream = blob.open("rb", retry=_retry()) if blob.size else io.BytesIO()
        elif _is_http(uri):
            stream = urllib.request.urlopen(uri, timeout=_HTTP_TIMEOUT_S)
        else:
            stream = open(uri, "rb")
    except (FileNotFoundError, _gcs_not_found()) as error:
        raise _missing(uri) from error
    except urllib.error.URLError as error:
        raise _http_input_error(uri, error) from error
    with stream:
        yield stream


def _http_input_error(uri: str, error: urllib.error.URLError) -> InputError:
    """A web source that answers with an error or cannot be reached: bad input, named."""
    if isinstance(error, urllib.error.HTTPError):
        return InputError(f"{uri}: HTTP {error.code} {error.reason}")
    return InputError(f"{uri}: cannot be reached ({error.reason})")


def glob(pattern: str) -> list[str]:
    """Sorted URIs of the files matching a shell-style pattern, matched the same way on every
    scheme: `*`, `?` and `[...]` stay within one path segment, `**` crosses folders."""
    return list(glob_sizes(pattern))


def glob_sizes(pattern: str) -> dict[str, int]:
    """The files matching a pattern (as `glob` matches them), sorted, with their sizes in bytes
    (on GCS from the same listing: no request per file)."""
    if _is_gcs(pattern):
        bucket, key_pattern = _split_gcs(pattern)
        cut = min((key_pattern.find(c) for c in _WILDCARDS if c in key_pattern), default=-1)
        prefix = key_pattern if cut < 0 else key_pattern[:cut]
        matches = _segment_pattern(key_pattern).fullmatch
        try:
            blobs = list(_gcs_client().list_blobs(bucket, prefix=prefix, retry=_retry()))
        except _gcs_not_found() as error:
            raise _missing(pattern) from error
        found = {
            f"{GCS_SCHEME}{bucket}/{blob.name}": int(blob.size or 0)
            for blob in blobs
            if matches(blob.name) and not blob.name.endswith("/")
        }
        return dict(sorted(found.items()))
    if _is_http(pattern):
        raise InputError(f"{pattern}: http(s) locations cannot be listed; name the files")
    import glob as local_glob

    found = {}
    for path in sorted(local_glob.glob(pattern, recursive=True)):
        try:
            status = os.stat(path)
        except FileNotFoundError:  # removed since it was listed: as if listed a moment later
            continue
        if stat.S_ISREG(status.st_mode):
            found[path] = status.st_size
    return found


def _segment_pattern(pattern: str) -> re.Pattern:
    """The regular expression of a glob as Python's recursive glob reads it: `**` as a whole
    segment matches zero or more folders, any other wildcard stays within one segment, and a
    wildcard at the start of a segment does not match a leading '.' (hidden names)."""
    out, i = [], 0
    while i < len(pattern):
        segment_start = i == 0 or pattern[i - 1] == "/"
        visible = r"(?!\.)" if segment_start else ""
        if pattern.startswith("**/", i) and segment_start:
            out.append(r"(?:(?!\.)[^/]*/)*")
            i += 3
        elif pattern.startswith("**", i) and segment_start and i + 2 == len(pattern):
            out.append(r"(?:(?!\.)[^/]*/)*(?!\.)[^/]*")
            i += 2
        elif pattern[i] == "*":
            out.append(visible + "[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append(visible + "[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 2 :]:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1 : end]
            negate = body[:1] in "!^"
            out.append(visible + ("[^" if negate else "[") + re.escape(body[negate:]).replace("\\-", "-") + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out), re.DOTALL)


def list_prefix(uri: str) -> list[str]:
    """Sorted URIs of every file below a folder-like prefix."""
    if _is_gcs(uri):
        return glob(join(uri, "**"))
    return sorted(os.path.join(root, name) for root, _, names in os.walk(uri) for name in names)


def size(uri: str) -> int:
    """Bytes of one file or object; InputError naming it when it is missing."""
    if _is_gcs(uri):
        return int(_reloaded_blob(uri).size or 0)
    _refuse_http(uri)
    try:
        return os.path.getsize(uri)
    except FileNotFoundError as error:
        raise _missing(uri) from error


def list_folders(uri: str) -> list[str]:
    """Sorted names of the folders right below a folder-like prefix (one listing request on GCS,
    whatever lies deeper); [] when there is none."""
    if _is_gcs(uri):
        bucket, key = _split_gcs(uri)
        prefix = key.rstrip("/") + "/" if key else ""
        try:
            pages = _gcs_client().list_blobs(bucket, prefix=prefix, delimiter="/", retry=_retry())
            for _ in pages:  # the folders (`prefixes`) are known once the pages are read
                pass
        except _gcs_not_found() as error:
            raise _missing(uri) from error
        return sorted(folder[len(prefix) :].rstrip("/") for folder in pages.prefixes)
    try:
        return sorted(entry.name for entry in os.scandir(uri) if entry.is_dir(follow_symlinks=False))
    except FileNotFoundError:
        return []


# --- Writing ------------------------------------------------------------------------------


def write_bytes(uri: str, data: bytes, *, if_absent: bool = False) -> None:
    """Writes a whole file atomically: readers see the old content or the new, never a part.

    With if_absent, the write fails with StorageConflictError when another writer has
    already created the object (a generation precondition on GCS, O_EXCL locally).
    """
    if _is_gcs(uri):
        _write_gcs(uri, data, if_absent=if_absent)
        return
    _refuse_http(uri)
    tmp = _written_beside(uri, data)
    try:
        if if_absent:
            try:
                os.link(tmp, uri)  # fails if uri exists: the local create-only write
            except FileExistsError as error:
                if read_bytes(uri) != data:  # the same bytes again is a repeated write, not a rival
                    raise StorageConflictError(f"{uri}: already exists") from error
        else:
            os.replace(tmp, uri)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _written_beside(path: str, data: bytes) -> str:
    """A temporary file holding `data` in the folder of `path` (to be renamed or linked there)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = tempfile.NamedTemporaryFile(dir=directory, prefix=".tmp-", delete=False)
    try:  # a full disk fails the write or the close: the temporary file goes either way
        with tmp:
            tmp.write(data)
        os.chmod(tmp.name, 0o666 & ~_umask())  # temp files are private; published files are not
    except BaseException:
        os.unlink(tmp.name)
        raise
    return tmp.name


def _write_gcs(uri: str, data: bytes, *, if_absent: bool) -> None:
    from google.api_core.exceptions import PreconditionFailed

    blob = _blob(uri)
    try:
        blob.upload_from_file(
            io.BytesIO(data),
            size=len(data),
            if_generation_match=0 if if_absent else None,
            retry=_retry(),
        )
    except _gcs_not_found() as error:  # an upload finds nothing missing but the bucket
        raise _missing(uri) from error
    except PreconditionFailed as error:
        # A retried create whose first attempt succeeded also lands here: same bytes = ours.
        if blob.download_as_bytes(retry=_retry()) != data:
            raise StorageConflictError(f"{uri}: already exists") from error


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """A small file as one reader saw it: the basis of a compare-and-swap (replace_if_unchanged)."""

    uri: str
    data: bytes | None  # None: there was no file
    generation: int = 0  # GCS: the object generation read (0: none); unused locally


def read_snapshot(uri: str, *, max_bytes: int) -> Snapshot:
    """The file's content (at most max_bytes) and, on GCS, the generation of exactly that content."""
    if _is_gcs(uri):
        blob = _blob(uri)
        try:
            blob.reload(retry=_retry())
        except _gcs_not_found():
            _require_bucket(uri)
            return Snapshot(uri, None, 0)
        if blob.size > max_bytes:
            raise _too_large(uri, max_bytes)  # never downloaded
        if not blob.size:  # the emulator answers an empty download with a malformed Content-Range
            return Snapshot(uri, b"", blob.generation)
        try:
            data = _download_generation(uri, blob.generation)
        except _precondition_failed():  # replaced between the two calls: read the newer one
            return read_snapshot(uri, max_bytes=max_bytes)
        return Snapshot(uri, data, blob.generation)
    try:
        return Snapshot(uri, read_bytes(uri, max_bytes=max_bytes))
    except InputError:
        if os.path.lexists(uri):
            raise
        return Snapshot(uri, None)


def replace_if_unchanged(seen: Snapshot, data: bytes) -> None:
    """Writes `data` over the file only if it still holds what `seen` read (compare-and-swap);
    StorageConflictError otherwise. GCS: a generation precondition; locally: compare and replace
    under an flock of the folder, so two writers on this host serialize."""
    uri = seen.uri
    if _is_gcs(uri):
        blob = _blob(uri)
        try:
            blob.upload_from_file(io.BytesIO(data), size=len(data), if_generation_match=seen.generation, retry=_retry())
        except _precondition_failed() as error:
            # A retried write whose first attempt succeeded also lands here: same bytes = ours.
            if read_snapshot(uri, max_bytes=max(len(data), 1)).data != data:
                raise StorageConflictError(f"{uri}: replaced by another writer since it was read") from error
        return
    with folder_lock(uri):
        if not _holds(uri, seen.data):
            raise StorageConflictError(f"{uri}: replaced by another writer since it was read")
        write_bytes(uri, data)


@dataclasses.dataclass(frozen=True)
class Version:
    """Which write of a file a writer found, without its content: what a fenced write or delete
    (write_if_version, delete_if_version) requires to be still in place. For files too large to
    compare (shards); a small file's compare-and-swap is read_snapshot/replace_if_unchanged."""

    uri: str
    tag: object = None  # GCS: the object's generation; locally: (inode, mtime_ns, size); None: no file


def versions_below(uri: str) -> dict[str, Version]:
    """The version of every file below a folder-like prefix (one listing on GCS), by URI."""
    if _is_gcs(uri):
        bucket, key = _split_gcs(uri)
        prefix = key.rstrip("/") + "/" if key else ""
        blobs = _gcs_client().list_blobs(bucket, prefix=prefix, retry=_retry())
        versions = (Version(f"gs://{bucket}/{blob.name}", blob.generation) for blob in blobs)
        return {version.uri: version for version in versions}
    return {path: Version(path, _local_tag(path)) for path in list_prefix(uri)}


def _local_tag(path: str) -> tuple[int, int, int] | None:
    # Every write replaces the file by a new one (write_bytes), so a write changes its inode.
    try:
        status = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return None
    return status.st_ino, status.st_mtime_ns, status.st_size


def write_if_version(seen: Version, data: bytes) -> Version:
    """Writes the file (atomically, as write_bytes) only if it is still the version `seen` found,
    and returns the version written; StorageConflictError otherwise. GCS: a generation
    precondition (0: must not exist); locally: the new file is written beside it, then checked
    and renamed under an flock of the folder."""
    if _is_gcs(seen.uri):
        blob = _blob(seen.uri)
        try:
            blob.upload_from_file(io.BytesIO(data), size=len(data), if_generation_match=seen.tag or 0, retry=_retry())
        except _precondition_failed() as error:
            # A retried write whose first attempt succeeded also lands here: same bytes = ours.
            again = read_snapshot(seen.uri, max_bytes=len(data) + 1)
            if again.data != data:
                raise _changed(seen.uri) from error
            return Version(seen.uri, again.generation)
        return Version(seen.uri, blob.generation)
    _refuse_http(seen.uri)
    tmp = _written_beside(seen.uri, data)
    try:
        with folder_lock(seen.uri):
            if _local_tag(seen.uri) != seen.tag:
                raise _changed(seen.uri)
            os.replace(tmp, seen.uri)
            return Version(seen.uri, _local_tag(seen.uri))
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def delete_if_version(seen: Version) -> None:
    """Deletes the file only if it is still the version `seen` found (nothing to do if it found
    none); StorageConflictError otherwise."""
    if seen.tag is None:
        return
    if _is_gcs(seen.uri):
        try:
            _blob(seen.uri).delete(if_generation_match=seen.tag, retry=_retry())
        except _gcs_not_found():
            pass  # a retried delete whose first attempt succeeded
        except _precondition_failed() as error:
            raise _changed(seen.uri) from error
        return
    _refuse_http(seen.uri)
    with folder_lock(seen.uri):
        if _local_tag(seen.uri) != seen.tag:
            raise _changed(seen.uri)
        os.unlink(seen.uri)


def _changed(uri: str) -> StorageConflictError:
    return StorageConflictError(f"{uri}: written or removed by another writer since this one found it")


def _holds(path: str, expected: bytes | None) -> bool:
    """True when the local file holds exactly `expected` (None: when there is no file)."""
    try:
        with open(path, "rb") as file:
            return file.read(len(expected or b"") + 1) == expected
    except FileNotFoundError:
        return expected is None


@contextlib.contextmanager
def folder_lock(uri: str) -> Iterator[None]:
    """An exclusive flock on the local folder holding `uri`, for a read-check-replace as one step
    (Linux locks a directory like a file; a lock file of its own would stay behind). The kernel
    drops it when the process dies, so a kill -9 never leaves it held."""
    folder = os.path.dirname(os.path.abspath(uri))
    os.makedirs(folder, exist_ok=True)
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing drops the flock


def _reloaded_blob(uri: str):  # -> google.cloud.storage.Blob
    """The object's blob with its metadata (size, update time) fetched; InputError naming it when missing."""
    blob = _blob(uri)
    try:
        blob.reload(retry=_retry())
    except _gcs_not_found() as error:
        raise _missing(uri) from error
    return blob


def modified_at(uri: str) -> float:
    """When the file or object was last written, in Unix seconds (GCS: the server's clock)."""
    if _is_gcs(uri):
        return _reloaded_blob(uri).updated.timestamp()
    try:
        return os.stat(uri).st_mtime
    except FileNotFoundError as error:
        raise _missing(uri) from error


def gcs_server_time(uri: str) -> float:
    """The storage server's time now, in Unix seconds, read from the creation time of a probe
    object beside `uri` (then deleted): the one clock every host writing a bucket shares."""
    probe = _blob(join(dirname(uri), f".clock-{os.getpid()}-{secrets.token_hex(6)}"))
    probe.upload_from_string(b"", if_generation_match=0, retry=_retry())
    try:
        return probe.time_created.timestamp()
    finally:
        with contextlib.suppress(_gcs_not_found()):
            probe.delete(if_generation_match=probe.generation, retry=_retry())


def _precondition_failed():
    from google.api_core.exceptions import PreconditionFailed

    return PreconditionFailed


def upload_file(local_path: str, uri: str) -> None:
    """Copies a local file to a URI (resumable on GCS); atomic for readers."""
    if _is_gcs(uri):
        try:
            _blob(uri).upload_from_filename(local_path, retry=_retry())
        except _gcs_not_found() as error:
            raise _missing(uri) from error
        return
    _refuse_http(uri)
    os.makedirs(os.path.dirname(os.path.abspath(uri)), exist_ok=True)
    tmp = f"{uri}.tmp-{os.getpid()}"
    try:
        shutil.copyfile(local_path, tmp)
        os.replace(tmp, uri)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def download_file(uri: str, local_path: str) -> None:
    """Copies a file or object to a local path."""
    os.makedirs(os.path.dirname(os.path.abspath(local_path)), exist_ok=True)
    if _is_gcs(uri):
        try:
            _blob(uri).download_to_filename(local_path, retry=_retry())
        except _gcs_not_found() as error:
            raise _missing(uri) from error
        return
    with open_read(uri) as source, open(local_path, "wb") as target:
        shutil.copyfileobj(source, target)


def copy(source: str, target: str) -> None:
    """Copies one file or object to another location (server-side within GCS)."""
    if _is_gcs(source) and _is_gcs(target):
        source_blob, target_blob = _blob(source), _blob(target)
        source_blob.bucket.copy_blob(source_blob, target_blob.bucket, target_blob.name, retry=_retry())
        return
    if not is_remote(source) and not is_remote(target):
        os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
        shutil.copyfile(source, target)
        return
    write_bytes(target, read_bytes(source))


def move(source: str, target: str) -> None:
    """Moves a file or object: a rename locally (atomic), copy then delete on GCS."""
    if not is_remote(source) and not is_remote(target):
        os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
        os.replace(source, target)
        return
    copy(source, target)
    delete(source)


def delete(uri: str) -> None:
    """Deletes one file or object; a missing one is not an error."""
    if _is_gcs(uri):
        try:
            _blob(uri).delete(retry=_retry())
        except _gcs_not_found():
            pass  # deleting is idempotent: a retried delete may find it gone
        return
    _refuse_http(uri)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(uri)


def delete_prefix(uri: str) -> None:
    """Deletes everything below a folder-like prefix."""
    if _is_gcs(uri):
        for child in list_prefix(uri):
            delete(child)
        return
    if os.path.isdir(uri):
        shutil.rmtree(uri)


def ensure_writable(uri: str) -> None:
    """Fails early with an InputError when nothing can be written below the URI."""
    probe = join(uri, f".write-probe-{os.getpid()}")
    try:
        write_bytes(probe, b"")
        delete(probe)
    except InputError:
        raise
    except Exception as error:  # any OS or API error: report it as the caller's input
        raise InputError(f"{uri}: output is not writable ({type(error).__name__}: {error})") from error


@functools.cache
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _refuse_http(uri: str) -> None:
    if _is_http(uri):
        raise InputError(f"{uri}: http(s) locations are read-only")
