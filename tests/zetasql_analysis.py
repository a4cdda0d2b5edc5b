"""GoogleSQL's own analyzer (ZetaSQL, the `zetasql` package) over BigQuery statements, in an interpreter of its own.

    PYTHONPATH=<folder with zetasql> python tests/zetasql_analysis.py < request.json

The package needs protobuf 7, which Beam and kfp refuse, so it is installed into a folder of
its own and run here, never imported by the tests' interpreter. The request is a JSON object:
`tables` maps a table name to its BigQuery JSON schema (name, type, mode, fields), and
`statements` lists the SQL to analyze. The answer on stdout is a JSON list: per statement,
null when it analyzes, else the analyzer's error.
"""

from __future__ import annotations

import json
import sys


def column_type(field: dict, type_factory, type_kind):
    """The ZetaSQL type of a BigQuery schema field (REPEATED -> ARRAY, RECORD -> STRUCT)."""
    simple = {
        "STRING": type_kind.TYPE_STRING,
        "INTEGER": type_kind.TYPE_INT64,
        "FLOAT": type_kind.TYPE_DOUBLE,
        "BOOLEAN": type_kind.TYPE_BOOL,
        "DATE": type_kind.TYPE_DATE,
        "TIMESTAMP": type_kind.TYPE_TIMESTAMP,
        "JSON": type_kind.TYPE_JSON,
    }
    if field["type"] == "RECORD":
        members = [(member["name"], column_type(member, type_factory, type_kind)) for member in field["fields"]]
        element = type_factory.create_struct_type(members)
    else:
        element = type_factory.create_simple_type(simple[field["type"]])
    return type_factory.create_array_type(element) if field.get("mode") == "REPEATED" else element


def main() -> None:
    from zetasql.api import Analyzer, CatalogBuilder, TableBuilder, TypeFactory
    from zetasql.types import AnalyzerOptions, LanguageOptions, TypeKind, ZetaSQLBuiltinFunctionOptions

    request = json.load(sys.stdin)
    language = LanguageOptions.maximum_features()
    catalog = CatalogBuilder("bigquery").with_builtin_functions(ZetaSQLBuiltinFunctionOptions(language_options=language))
    for name, fields in request["tables"].items():
        table = TableBuilder(name)
        for field in fields:
            table.add_column(field["name"], column_type(field, TypeFactory, TypeKind))
        catalog.add_table(table.build())
    analyzer = Analyzer(AnalyzerOptions(language_options=language), catalog.build())
    answers = []
    for sql in request["statements"]:
        try:
            analyzer.analyze_statement(sql)
            answers.append(None)
        except Exception as error:  # the analyzer's error is the answer, whatever its class
            answers.append(f"{type(error).__name__}: {error}")
    json.dump(answers, sys.stdout)


if __name__ == "__main__":
    main()
