"""Dataset preparation: raw IDX files or product pictures -> validated image shards and their manifest."""
