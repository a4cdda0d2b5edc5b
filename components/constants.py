"""Facts about the data set and the contracts between steps, kept in one place."""

from importlib import metadata

IMAGE_SIZE = 28
NUM_CLASSES = 10
CLASS_NAMES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

# Versions of the data contracts (docs/architecture.md). Bump on any incompatible change.
SHARD_SCHEMA_VERSION = "fmnist-shards/1"

# Feature keys of the tf.train.Example records in an image shard.
FEATURE_IMAGE_ID = "image_id"
FEATURE_IMAGE = "image/encoded"
FEATURE_FORMAT = "image/format"
FEATURE_LABEL = "label"
# Optional: where the picture came from (its full URI, or a product key), for joining predictions to product data.
FEATURE_IMAGE_URI = "image/uri"

MANIFEST_NAME = "manifest.json"

# The IDX files of the published data set: split -> (images file, labels file).
IDX_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
SPLIT_SIZES = {"train": 60_000, "test": 10_000}

# SHA-256 of the *decompressed* IDX files of Zalando's Fashion-MNIST release, computed once
# from Debian's dataset-fashion-mnist. Mirrors recompress; the content must not change.
PUBLISHED_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}

DEFAULT_SOURCE = "/usr/share/datasets/fashion-mnist"


def tool_version() -> str:
    """Version of this package, recorded in every artifact for lineage."""
    try:
        return metadata.version("fmnist-jobs")
    except metadata.PackageNotFoundError:  # running from a source tree without install
        return "0+unknown"


# Log records that advance a step's progress carry this attribute (logging's `extra`): a dict with
# "unit" ("shards", "epochs"), and any of "done" (absolute; else one more), "total", "items" (images
# of this unit) and "items_total". jobs/entrypoint.py turns them into one updating line at a terminal.
PROGRESS_LOG_FIELD = "progress"
# Labels a log record may carry (logging's `extra`) for structured logs; once seen, a label stays.
LOG_LABELS = ("step", "run_id", "run_date", "model_version")
