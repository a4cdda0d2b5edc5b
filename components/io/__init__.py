"""Where bytes live: storage for local paths and gs:// alike, the run lease, TFRecord framing,
Parquet parts, IDX and image codecs."""
