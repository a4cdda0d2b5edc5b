"""The storage layer, local and against a real GCS API server on loopback."""
import pytest

from components import storage
from components.errors import InputError


@pytest.fixture(params=["local", "gcs"])
def root(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "root")
    return request.getfixturevalue("gcs_bucket") + "/root"


def test_write_read_list_delete_round_trip(root):
    storage.write_bytes(storage.join(root, "a/one.bin"), b"1")
    storage.write_bytes(storage.join(root, "a/two.bin"), b"22")
    storage.write_bytes(storage.join(root, "b/three.txt"), b"333")

    assert storage.read_bytes(storage.join(root, "a/two.bin")) == b"22"
    assert storage.glob(storage.join(root, "a/*.bin")) == [storage.join(root, "a/one.bin"), storage.join(root, "a/two.bin")]
    assert len(storage.list_prefix(root)) == 3
    with storage.open_read(storage.join(root, "b/three.txt")) as stream:
        assert stream.read() == b"333"

    storage.delete_prefix(storage.join(root, "a"))
    assert storage.list_prefix(root) == [storage.join(root, "b/three.txt")]
    assert not storage.exists(storage.join(root, "a/one.bin"))


def test_create_only_write_refuses_a_second_writer(root):
    uri = storage.join(root, "manifest.json")
    storage.write_bytes(uri, b"first", if_absent=True)
    storage.write_bytes(uri, b"first", if_absent=True)  # a retried identical create is fine
    with pytest.raises(storage.StorageConflictError, match="already exists"):
        storage.write_bytes(uri, b"second", if_absent=True)
    assert storage.read_bytes(uri) == b"first"


def test_missing_file_is_an_input_error_naming_it(root):
    missing = storage.join(root, "nope.bin")
    with pytest.raises(InputError, match="nope.bin: file not found"):
        storage.read_bytes(missing)


def test_large_upload_and_download_round_trip(root, tmp_path):
    payload = bytes(range(256)) * (storage.RESUMABLE_CHUNK_BYTES // 256 + 1000)  # > one chunk
    local = tmp_path / "big.bin"
    local.write_bytes(payload)
    storage.upload_file(str(local), storage.join(root, "big.bin"))
    storage.download_file(storage.join(root, "big.bin"), str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == payload


def test_unwritable_output_is_an_input_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(InputError, match="not writable"):
        storage.ensure_writable(str(blocker / "out"))


def test_move_leaves_only_the_target(root):
    source, target = storage.join(root, "staging/part.bin"), storage.join(root, "table/part.bin")
    storage.write_bytes(source, b"rows")
    storage.move(source, target)
    assert storage.read_bytes(target) == b"rows"
    assert not storage.exists(source)
