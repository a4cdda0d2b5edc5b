"""storage.glob matches the same files on gs:// as on a local disk: `*`, `?` and `[...]` stay within
one folder, `**` crosses folders, a wildcard does not match a hidden ('.') name. The same tree is
written locally and on the GCS API server."""

from __future__ import annotations

import pytest

from components.io import storage

TREE = [
    "a.tfrecord",
    "test-1.tfrecord",
    "test-2.tfrecord",
    "t[1].tf",
    "x/b.tfrecord",
    "x/y/c.tfrecord",
    "x/test-3.tfrecord",
    ".hidden.tfrecord",
    "x/.h/d.tfrecord",
    "x/.e.tfrecord",
]
PATTERNS = [
    "*.tfrecord",
    "**/*.tfrecord",
    "x/*.tfrecord",
    "x/**",
    "**",
    "test-?.tfrecord",
    "test-[12].tfrecord",
    "test-[!1].tfrecord",
    "*/*.tfrecord",
    "*/test-*",
    "x/**/c.tfrecord",
    "nothing-*",
    "x/.h/*",
    ".*",
]


def relative(root: str, uris: list[str]) -> list[str]:
    return [uri[len(root) + 1 :] for uri in uris]


@pytest.fixture
def trees(tmp_path, gcs_bucket) -> tuple[str, str]:
    local, remote = str(tmp_path / "tree"), storage.join(gcs_bucket, "tree")
    for name in TREE:
        for root in (local, remote):
            storage.write_bytes(storage.join(root, name), b"x")
    return local, remote


@pytest.mark.parametrize("pattern", PATTERNS)
def test_gcs_glob_matches_like_the_local_glob(trees, pattern):
    local, remote = trees
    expected = relative(local, storage.glob(storage.join(local, pattern)))
    assert relative(remote, storage.glob(storage.join(remote, pattern))) == expected


def test_a_star_does_not_cross_folders_on_gcs(trees):
    _, remote = trees
    assert relative(remote, storage.glob(storage.join(remote, "*.tfrecord"))) == [
        "a.tfrecord",
        "test-1.tfrecord",
        "test-2.tfrecord",
    ]
    assert "x/y/c.tfrecord" in relative(remote, storage.glob(storage.join(remote, "**/*.tfrecord")))
