"""Parquet part files of the output tables: streamed to local disk, then stored in one piece.

A part is written to a local temporary file row group by row group (memory stays bounded by
one row group), then uploaded to its URI in one atomic step: a reader of the URI sees the
whole part or nothing, and a retried writer replaces it with the same rows.
"""

from __future__ import annotations

import collections
import io
import os
import tempfile
from collections.abc import Collection

import pyarrow as pa
import pyarrow.parquet as pq

from components.io import storage

# Rows buffered before a row group is written: ~6 MB of prediction rows. Larger groups read
# faster in DuckDB/BigQuery; this bounds the memory a writer holds.
ROW_GROUP_ROWS = 65_536


class PartWriter:
    """Writes record batches of one schema into one Parquet part at `uri`.

    Only the `dictionary_columns` are dictionary-encoded. Nothing is stored when no row was
    written (an empty part is no part).
    """

    def __init__(
        self, uri: str, schema: pa.Schema, *, dictionary_columns: Collection[str], row_group_rows: int = ROW_GROUP_ROWS
    ) -> None:
        self.uri = uri
        self.schema = schema
        self._options = writer_options(schema, dictionary_columns)
        self.rows = 0
        self._row_group_rows = row_group_rows
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._local_path: str | None = None

    def write(self, batch: pa.RecordBatch) -> None:
        """Adds rows; a row group is flushed to local disk once enough are pending."""
        if batch.num_rows == 0:
            return
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        self.rows += batch.num_rows
        if self._pending_rows >= self._row_group_rows:
            self._flush()

    def close(self) -> int:
        """Stores the part at its URI (if it has rows) and returns its row count."""
        try:
            self._flush()
            if self._writer is not None:
                self._writer.close()
                self._writer = None
                storage.upload_file(self._local_path, self.uri)
        finally:
            self.discard()
        return self.rows

    def discard(self) -> None:
        """Drops the local file without storing anything."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._local_path is not None and os.path.exists(self._local_path):
            os.unlink(self._local_path)
        self._local_path = None
        self._pending.clear()

    def __enter__(self) -> PartWriter:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()

    def _flush(self) -> None:
        if not self._pending:
            return
        if self._writer is None:
            handle, self._local_path = tempfile.mkstemp(prefix="part-", suffix=".parquet")
            os.close(handle)
            self._writer = pq.ParquetWriter(self._local_path, self.schema, **self._options)
        self._writer.write_table(pa.Table.from_batches(self._pending, schema=self.schema), row_group_size=self._pending_rows)
        self._pending.clear()
        self._pending_rows = 0


def writer_options(schema: pa.Schema, dictionary_columns: Collection[str]) -> dict:
    """pyarrow's Parquet writer options of a part: a dictionary only for the columns named."""
    return {"use_dictionary": [name for name in schema.names if name in dictionary_columns]}


def write_part(uri: str, table: pa.Table, *, dictionary_columns: Collection[str]) -> None:
    """Stores a whole table (small: held in memory) as one part at `uri`, in one piece."""
    buffer = io.BytesIO()
    pq.write_table(table, buffer, **writer_options(table.schema, dictionary_columns))
    storage.write_bytes(uri, buffer.getvalue())


def merge_parts(sources: list[str], uri: str, *, dictionary_columns: Collection[str]) -> int:
    """Writes the rows of `sources` (parts of one schema, lineage metadata included) in their
    order into one part at `uri`, a row group at a time; returns its row count."""
    with storage.open_read(sources[0]) as stream:
        schema = pq.ParquetFile(stream).schema_arrow
    with PartWriter(uri, schema, dictionary_columns=dictionary_columns) as writer:
        for source in sources:
            with storage.open_read(source) as stream:
                for batch in pq.ParquetFile(stream).iter_batches(batch_size=ROW_GROUP_ROWS):
                    writer.write(batch)
    return writer.rows


def part_rows(uri: str) -> int:
    """Row count of a stored part, from its footer (the data is not read)."""
    with storage.open_read(uri) as stream:
        return pq.ParquetFile(stream).metadata.num_rows


def value_counts(uri: str, column: str) -> dict[str, int]:
    """How often each value of one (string) column occurs in a stored part."""
    with storage.open_read(uri) as stream:
        values = pq.ParquetFile(stream).read(columns=[column]).column(column).to_pylist()
    return dict(collections.Counter(values))
