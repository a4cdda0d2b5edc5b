"""SQL over the scoring tables: views `predictions`, `errors` and `runs` of the complete runs.

    fmnist query "SELECT predicted_class, count(*) FROM predictions GROUP BY ALL" --predictions runs/local/scores
    fmnist query "SELECT * FROM errors WHERE run_date = '2026-11-28'" --predictions gs://bucket/scores --out errors.csv
"""
import argparse
import sys

from components.tables import format_table, query, write_result
from jobs.runner import main_of, new_parser, uri


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser("fmnist query", __doc__.splitlines()[0])
    parser.add_argument("sql", help="one SQL query (DuckDB dialect); examples in docs/analysts.md")
    parser.add_argument("--predictions", type=uri, required=True, help="the scoring output root (the --output given to `fmnist score`)")
    parser.add_argument("--out", type=uri, help="write the result to FILE.csv or FILE.parquet (a path or gs:// URI) instead of printing it")
    return parser


def query_and_show(*, sql: str, predictions: str, out: str | None = None) -> dict | None:
    """Runs the query, then prints the result as a table or writes it to `out`."""
    table = query(sql=sql, predictions=predictions)
    if out is None:
        print(format_table(table))
        return None
    write_result(table, out)
    return {"rows": table.num_rows, "out": out}


main = main_of(build_parser, query_and_show)

if __name__ == "__main__":
    sys.exit(main())
