"""The storage layer, local and against a real GCS API server on loopback."""

import pytest

from components.errors import InputError
from components.io import storage


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


def test_a_fenced_write_or_delete_changes_only_the_version_it_found(root):
    """write_if_version/delete_if_version: refused once another writer replaced, created or
    removed the file since it was found; a write of the same bytes again (a retry) passes."""
    shard, fresh = storage.join(root, "d", "a.bin"), storage.join(root, "d", "b.bin")
    storage.write_bytes(shard, b"first")
    found = storage.versions_below(storage.join(root, "d"))
    assert sorted(found) == [shard]
    absent = storage.Version(fresh)
    storage.write_bytes(shard, b"rival")  # another writer since
    storage.write_bytes(fresh, b"rival")
    for fenced in (lambda: storage.write_if_version(found[shard], b"mine"), lambda: storage.delete_if_version(found[shard])):
        with pytest.raises(storage.StorageConflictError, match="a.bin"):
            fenced()
    with pytest.raises(storage.StorageConflictError, match="b.bin"):
        storage.write_if_version(absent, b"mine")
    assert storage.read_bytes(shard) == b"rival" and storage.read_bytes(fresh) == b"rival"

    ours = storage.versions_below(storage.join(root, "d"))
    written = storage.write_if_version(ours[shard], b"mine")
    if root.startswith("gs://"):
        assert storage.write_if_version(ours[shard], b"mine") == written  # retried after a lost response: the same bytes
    assert storage.versions_below(storage.join(root, "d"))[shard] == written
    storage.delete_if_version(ours[fresh])
    assert storage.read_bytes(shard) == b"mine" and not storage.exists(fresh)
    assert storage.list_prefix(storage.join(root, "d")) == [shard]  # no temporary file left


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


MALFORMED_URIS = ["gs:/b/x", "GS://b/x", "gs://", "gs:///x", "s3://b/x", "gcs://b/x", "gs://Bucket/x", "file:/x"]


@pytest.mark.parametrize("uri", MALFORMED_URIS)
def test_a_malformed_uri_is_refused_by_every_operation_and_creates_nothing(uri, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a typo must never become a local folder named `gs:` or `s3:`
    operations = [
        lambda: storage.exists(uri),
        lambda: storage.read_bytes(uri),
        lambda: storage.glob(uri + "/*"),
        lambda: storage.list_prefix(uri),
        lambda: storage.write_bytes(uri + "/f", b"x"),
        lambda: storage.upload_file(__file__, uri + "/f"),
        lambda: storage.delete(uri + "/f"),
        lambda: storage.delete_prefix(uri),
        lambda: storage.ensure_writable(uri),
        lambda: storage.arrow_filesystem(uri),
    ]
    for operation in operations:
        with pytest.raises(InputError, match="scheme|bucket|empty location"):
            operation()
    assert list(tmp_path.iterdir()) == []


def test_an_empty_location_is_refused():
    with pytest.raises(InputError, match="empty location"):
        storage.check_uri("")


@pytest.mark.parametrize("uri", ["runs/local", "/abs/path", "gs://my-bucket", "gs://my-bucket/a/b", "https://host/x.gz"])
def test_well_formed_uris_pass_unchanged(uri):
    assert storage.check_uri(uri) == uri


@pytest.mark.parametrize("name", ["../x", "..", ".", "", "/etc/passwd", "a/b", "a\\b", "gs://other/x"])
def test_a_name_read_from_data_never_leaves_its_folder(name):
    with pytest.raises(InputError, match="not a plain name"):
        storage.child("gs://b/models", name)
    assert storage.child("gs://b/models", "v1") == "gs://b/models/v1"


def test_a_missing_bucket_is_named_as_such(gcs_bucket):
    missing = gcs_bucket + "-missing"
    for operation in (
        lambda: storage.exists(f"{missing}/a"),
        lambda: storage.read_bytes(f"{missing}/a"),
        lambda: storage.write_bytes(f"{missing}/a", b"x"),
        lambda: storage.glob(f"{missing}/*.tfrecord"),
        lambda: storage.upload_file(__file__, f"{missing}/a"),
    ):
        with pytest.raises(InputError, match=f"bucket {missing} does not exist"):
            operation()
    with pytest.raises(InputError, match="file not found"):  # an existing bucket: the object is what is missing
        storage.read_bytes(f"{gcs_bucket}/absent")
    assert storage.exists(f"{gcs_bucket}/absent") is False


@pytest.mark.parametrize("pointer", ["../elsewhere", "/", "/tmp/elsewhere", "v1/../../elsewhere", "gs://other/v1"])
def test_latest_never_points_outside_the_model_root(tmp_path, pointer):
    from components.contracts import registry

    elsewhere = tmp_path / "elsewhere"  # a complete, gate-passing version that LATEST tries to reach
    elsewhere.mkdir()
    (elsewhere / registry.MODEL_FILE).write_bytes(b"model")
    (elsewhere / registry.METRICS_FILE).write_text('{"quality_gate": {"passed": true}}')
    root = tmp_path / "models"
    root.mkdir()
    (root / registry.LATEST_NAME).write_text(pointer + "\n")
    with pytest.raises(InputError, match="not a plain name"):
        registry.resolve(str(root))


@pytest.mark.parametrize("name", ["../train-00000-of-00001.tfrecord", "/etc/passwd", "sub/train-00000-of-00001.tfrecord"])
def test_manifest_shard_names_never_leave_the_data_set(tmp_path, name):
    from components.contracts.manifest import Manifest, ShardEntry, SplitEntry
    from components.contracts.shards import split_shard_uris

    shard = ShardEntry(name=name, num_records=1, sha256="0" * 64, bytes=1)
    manifest = Manifest.new(source={}, splits={"train": SplitEntry(num_records=1, class_histogram=None, shards=[shard])})
    with pytest.raises(InputError, match="not a plain name"):
        split_shard_uris(str(tmp_path / "data"), manifest, "train")


@pytest.mark.parametrize("content", ["{not json", "[]", '{"quality_gate": "yes"}', '{"accuracy": 0.9}'])
def test_an_invalid_metrics_file_is_an_input_error_naming_it(tmp_path, content):
    from components.contracts import registry

    version = tmp_path / "models" / "v1"
    version.mkdir(parents=True)
    (version / registry.MODEL_FILE).write_bytes(b"model")
    (version / registry.METRICS_FILE).write_text(content)
    with pytest.raises(InputError, match=f"{version / registry.METRICS_FILE}: not a valid metrics file"):
        registry.resolve(str(version))


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '"text"'])
def test_an_invalid_manifest_is_an_input_error_naming_it(tmp_path, content):
    from components.contracts.shards import read_manifest

    (tmp_path / "manifest.json").write_text(content)
    with pytest.raises(InputError, match=f"{tmp_path / 'manifest.json'}: manifest is"):
        read_manifest(str(tmp_path))


def test_a_bounded_read_never_reads_past_its_cap(root):
    small, large = storage.join(root, "small"), storage.join(root, "large")
    storage.write_bytes(small, b"12345")
    storage.write_bytes(large, b"x" * 4097)

    assert storage.read_bytes(small, max_bytes=5) == b"12345"
    assert storage.read_bytes(storage.join(root, "small"), max_bytes=4096) == b"12345"
    with pytest.raises(InputError, match=f"{large}: larger than the 4096 bytes") as refused:
        storage.read_bytes(large, max_bytes=4096)
    assert "xxx" not in str(refused.value)  # the content is never quoted
    storage.write_bytes(storage.join(root, "empty"), b"")
    assert storage.read_bytes(storage.join(root, "empty"), max_bytes=10) == b""
    with pytest.raises(InputError, match="file not found"):
        storage.read_bytes(storage.join(root, "absent"), max_bytes=10)


def test_a_bounded_read_refuses_a_symbolic_link(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("do-not-show")
    link = tmp_path / "pointer"
    link.symlink_to(secret)
    with pytest.raises(InputError, match=f"{link}: is a symbolic link") as refused:
        storage.read_bytes(str(link), max_bytes=1024)
    assert "do-not-show" not in str(refused.value)
    assert storage.read_bytes(str(link)) == b"do-not-show"  # an unbounded read follows links as before
