"""The formats between steps, declared once: shards and manifest, model versions, tables, run summaries, step parameters."""
