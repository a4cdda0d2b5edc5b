"""One read-only SQL query over the scoring tables: views `predictions`, `predictions_current`, `errors`, `runs`.

    fmnist query "SELECT predicted_class, count(*) FROM predictions_current GROUP BY ALL" --scores runs/local/scores
    fmnist query "SELECT * FROM errors WHERE run_date = '2026-11-28'" --scores gs://bucket/scores --out errors.csv

Exactly one SELECT; anything else (COPY, ATTACH, INSTALL, LOAD, SET, a second statement) is
refused with exit 2, and the query cannot read files beyond the tables. --out exports.
"""

import argparse
import sys

from components.tables import format_table, query, write_result
from jobs.runner import main_of, new_parser, uri


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser("fmnist query", __doc__.splitlines()[0])
    parser.add_argument("sql", help="one SELECT (DuckDB dialect); examples in docs/analysts.md")
    parser.add_argument(
        "--scores",
        "--predictions",
        dest="scores",
        type=uri,
        required=True,
        help="the scoring output root (the --output given to `fmnist score`); --predictions is a deprecated alias",
    )
    parser.add_argument(
        "--out", type=uri, help="write the result to FILE.csv or FILE.parquet (a path or gs:// URI) instead of printing it"
    )
    return parser


def query_and_show(*, sql: str, scores: str, out: str | None = None) -> dict | None:
    """Runs the query, then prints the result as a table or writes it to `out`."""
    table = query(sql=sql, scores=scores)
    if out is None:
        print(format_table(table))
        return None
    write_result(table, out)
    return {"rows": table.num_rows, "out": out}


main = main_of(build_parser, query_and_show)

if __name__ == "__main__":
    sys.exit(main())
