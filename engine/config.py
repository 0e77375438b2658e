"""rivet.toml → typed, validated config (SPEC §1).

The dataclasses below are the contract the rest of the engine codes against. `load_config` reads TOML with
tomllib, validates it (unknown keys with position + did-you-mean, wrong types, cross-field rules), fills
`${VAR}` from params then the environment (unresolved → refuse), anchors relative paths to the config's
directory, resolves credentials by name only (never copied into anything that gets printed).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

MODES = ("full", "incremental", "chunked", "time_window")
FORMATS = ("parquet", "csv")
COMPRESSIONS = ("zstd", "snappy", "gzip", "lz4", "none")
SOURCE_TYPES = ("postgres", "mysql", "mssql")
DESTINATION_TYPES = ("local", "s3", "gcs", "azure", "stdout")


@dataclass(frozen=True)
class Tuning:
    profile: str = "balanced"                # fast | balanced | safe
    batch_size: int | None = None            # rows per batch; None → derived from batch_size_memory_mb
    batch_size_memory_mb: int = 32
    statement_timeout_s: int = 300           # 0 = no timeout
    max_retries: int = 3
    retry_backoff_ms: int = 2000
    throttle_ms: int = 0
    connect_timeout_s: int = 10


@dataclass(frozen=True)
class SourceConfig:
    type: str                                # postgres | mysql | mssql
    url: str = field(repr=False)             # resolved connection URL; holds the password: never print it
    environment: str = "production"          # local | replica | production
    tuning: Tuning = field(default_factory=Tuning)
    tls: dict = field(default_factory=dict)  # e.g. {"sslmode": "require"} / mssql {"encrypt": True}

    def masked_url(self) -> str:
        from engine.secrets import mask_url
        return mask_url(self.url)


@dataclass(frozen=True)
class DestinationConfig:
    type: str                                # local | s3 | gcs | azure | stdout
    path: str | None = None                  # local: absolute (anchored), may hold {export} {date} {run_id}
    bucket: str | None = None                # s3/gcs bucket, azure container
    prefix: str = ""                         # may hold {export} {date} {run_id}
    region: str | None = None
    endpoint: str | None = None
    access_key_env: str | None = None
    secret_key_env: str | None = None
    session_token_env: str | None = None
    aws_profile: str | None = None
    credentials_file: str | None = None      # gcs service account json (absolute)
    account_name: str | None = None
    account_key_env: str | None = None
    sas_token_env: str | None = None


@dataclass(frozen=True)
class ExportConfig:
    name: str
    destination: DestinationConfig
    table: str | None = None                 # "schema.table" or "table"
    query: str | None = None                 # the SQL text (query_file is read into this)
    query_file: str | None = None            # absolute path, for display only
    mode: str = "full"
    cursor_column: str | None = None
    incremental_cursor_mode: str = "single_column"   # single_column | coalesce
    cursor_fallback_column: str | None = None
    chunk_column: str | None = None          # None → the single-integer primary key (table exports)
    chunk_size: int | None = None
    chunk_count: int | None = None
    chunk_by_days: int | None = None
    parallel: int = 1
    chunk_checkpoint: bool = True
    chunk_max_attempts: int = 3
    time_column: str | None = None
    days_window: int | None = None
    time_column_type: str = "timestamp"      # timestamp | unix
    format: str = "parquet"
    compression: str = "zstd"                # csv: always "none"
    max_file_size: int | None = None         # bytes; None = one part per file unit
    skip_empty: bool = False
    on_schema_drift: str = "warn"            # warn | continue | fail
    columns: dict = field(default_factory=dict)   # per-column override: {"col": "text" | "skip"}
    tuning: Tuning = field(default_factory=Tuning)  # source tuning with [exports.tuning] merged in


@dataclass(frozen=True)
class ExecutorConfig:
    type: str = "local"                      # local | dask
    address: str | None = None


@dataclass(frozen=True)
class Config:
    path: Path                               # the config file (absolute)
    source: SourceConfig
    exports: tuple[ExportConfig, ...]
    state_path: Path                         # default <config dir>/.rivet/state.duckdb
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    tui_keys: dict = field(default_factory=dict)   # binding id → key(s), from [tui.keys]

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def export(self, name: str) -> ExportConfig:
        for e in self.exports:
            if e.name == name:
                return e
        from engine.errors import RivetError
        import difflib
        close = difflib.get_close_matches(name, [e.name for e in self.exports], n=1)
        raise RivetError("RIVET_CONFIG_UNKNOWN_EXPORT", f"no export named {name!r} in {self.path.name}",
                         f"did you mean {close[0]!r}?" if close else
                         "exports: " + ", ".join(e.name for e in self.exports))

    def select(self, names: list[str] | tuple[str, ...] | None) -> list[ExportConfig]:
        return [self.export(n) for n in names] if names else list(self.exports)


def load_config(path: str | Path, params: dict[str, str] | None = None, state_path: str | Path | None = None) -> Config:
    """Read and validate rivet.toml. Raises RivetError (exit class 1) on any problem."""
    raise NotImplementedError
