"""One read-only SQL query over the scoring tables: views `predictions`, `predictions_current`, `errors`, `runs`, `models`.

    fmnist query "SELECT predicted_class, count(*) FROM predictions_current GROUP BY ALL" --scores runs/local/scores
    fmnist query "SELECT * FROM errors WHERE run_date = '2026-11-28'" --scores gs://bucket/scores --out errors.csv
    fmnist query "SELECT model_version, test_accuracy, is_latest FROM models" --scores runs/local/scores

Exactly one SELECT; anything else (COPY, ATTACH, INSTALL, LOAD, SET, a second statement) is
refused with exit 2, and the query cannot read files beyond the tables. --out exports.
"""

import argparse
import sys

from components.analysts.export import write_result
from components.analysts.tables import QueryParameters, format_table, query
from jobs.entrypoint import main_of, new_parser


def build_parser() -> argparse.ArgumentParser:
    return new_parser("fmnist query", __doc__.splitlines()[0], QueryParameters)


def query_and_show(*, sql: str, scores: str, out: str | None = None, models: str | None = None) -> dict | None:
    """Runs the query, then prints the result as a table or writes it to `out`."""
    table = query(sql=sql, scores=scores, models=models)
    if out is None:
        print(format_table(table))
        return None
    write_result(table, out)
    return {"rows": table.num_rows, "out": out}


main = main_of(build_parser, query_and_show)

if __name__ == "__main__":
    sys.exit(main())
