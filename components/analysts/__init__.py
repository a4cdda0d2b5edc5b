"""What analysts read: DuckDB views and the query sandbox, the Python reader, the HTML report, migrations, schema docs."""

from components.analysts.reader import read

__all__ = ["read"]
