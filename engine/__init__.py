"""Rivet's engine: config, sources, formats, destinations, state and the runner.

Nothing here imports the terminal UI (textual / rich); a test enforces it.
"""

# mysql-connector-python's C extension fails to load ("static TLS block") once pyarrow or duckdb is loaded; importing
# it first lets the MySQL adapter use the C driver (3x faster than the pure-Python fallback).
try:
    import _mysql_connector  # noqa: F401
except ImportError:
    # once hashlib has loaded the system libcrypto (pytest does), the bundled libssl loads only after `ssl`
    try:
        import ssl  # noqa: F401
        import _mysql_connector  # noqa: F401,F811
    except ImportError:
        pass
