"""Batch scoring: shards -> one row per image in the prediction or error tables, published atomically per run."""
