"""The bundled demo: a deterministic DuckDB warehouse and the project that syncs it."""
