"""The model registry: LATEST as a pointer that is only ever read as one short line of text."""

import pytest

from components.contracts import registry
from components.errors import InputError


@pytest.fixture
def model_root(tmp_path) -> str:
    root = tmp_path / "models"
    root.mkdir()
    return str(root)


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"\xff\xfe20261129T043000Z\n", "not UTF-8 text"),
        (b"2026\x001129T043000Z\n", "not one line naming a model version"),
        (b"v1\nv2\n", "not one line naming a model version"),
        (b"x" * 300_000, "larger than the 1024 bytes"),
    ],
)
def test_a_latest_that_is_not_a_version_line_is_refused_without_quoting_it(model_root, content, problem):
    pointer = f"{model_root}/{registry.LATEST_NAME}"
    with open(pointer, "wb") as file:
        file.write(content)
    with pytest.raises(InputError, match=problem) as refused:
        registry.resolve(model_root)
    message = str(refused.value)
    assert message.startswith(pointer) and "\n" not in message and "1129T" not in message and "xxx" not in message


def test_a_latest_that_links_to_another_file_is_refused_without_showing_it(model_root, tmp_path):
    secret = tmp_path / "credentials.txt"
    secret.write_text("top-secret-token\n")
    (tmp_path / "models" / registry.LATEST_NAME).symlink_to(secret)
    with pytest.raises(InputError, match="is a symbolic link") as refused:
        registry.resolve(model_root)
    assert "top-secret" not in str(refused.value)
