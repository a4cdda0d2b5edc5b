"""What analysts read: DuckDB views and the query sandbox, the HTML report, table migrations, generated schema docs."""
