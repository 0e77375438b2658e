"""rivet.toml → typed, validated config (README "Config").

One model per section: the engine codes against the same frozen pydantic models the file is validated into
(ExportConfig, DestinationConfig, Tuning, ExecutorConfig, RunConfig, and the guardrail/layout sections of
engine/guardrails.py and engine/layouts.py). Only [source] has a separate resolved type, SourceConfig, because its
shape changes (url / url_env / url_file / host… → one URL).

`load_config` reads TOML with tomllib, validates it (unknown keys with position + did-you-mean, wrong types,
cross-field rules), fills `${VAR}` from params then the environment (unresolved → refuse), anchors relative paths
to the config's directory, resolves credentials by name only (never copied into anything that gets printed).
"""
from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from urllib.parse import quote, urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails, PydanticCustomError

from engine import secrets, urls
from engine.errors import ExitClass, RivetError, internal
from engine.guardrails import MetaColumnsConfig, NotificationsConfig, QualityConfig, settle_seconds
from engine.layouts import (LayoutError, ParquetConfig, check_format, check_memory_keys, check_partition_keys,
                            resolve_compression)

# Literal types for the validators; the tuples are derived from them so the two cannot drift apart.
Mode = Literal["full", "incremental", "chunked", "time_window"]
Format = Literal["parquet", "csv"]
Compression = Literal["zstd", "snappy", "gzip", "lz4", "none"]
SourceType = Literal["postgres", "mysql", "mssql"]
DestinationType = Literal["local", "s3", "gcs", "azure", "stdout"]
MODES: tuple[str, ...] = get_args(Mode)
FORMATS: tuple[str, ...] = get_args(Format)
COMPRESSIONS: tuple[str, ...] = get_args(Compression)
SOURCE_TYPES: tuple[str, ...] = get_args(SourceType)
DESTINATION_TYPES: tuple[str, ...] = get_args(DestinationType)


# ---------------------------------------------------------------------------------------------------------------
# Tuning profiles, size parsing, placeholders: public because plan/check/TUI display them.

TUNING_PROFILES: dict[str, dict[str, int]] = {
    "fast": {"batch_size_memory_mb": 64, "statement_timeout_s": 0, "max_retries": 3, "retry_backoff_ms": 1000,
             "throttle_ms": 0},
    "balanced": {"batch_size_memory_mb": 32, "statement_timeout_s": 300, "max_retries": 3, "retry_backoff_ms": 2000,
                 "throttle_ms": 0},
    "safe": {"batch_size_memory_mb": 16, "statement_timeout_s": 900, "max_retries": 5, "retry_backoff_ms": 5000,
             "throttle_ms": 20},
}
ENVIRONMENT_PROFILES = {"local": "fast", "replica": "balanced", "production": "safe"}
PLACEHOLDERS = urls.PLACEHOLDERS

_INT64 = (-(2**63), 2**63 - 1)          # TOML integers are 64-bit; tomllib accepts more, we don't
_MAX_FILE_BYTES = 16 * 1024 * 1024      # config, query_file, url_file: bigger is a mistake or an attack
_SIZE = re.compile(r"(\d{1,15}(?:\.\d{1,6})?)\s*([KMGT]i?B|B)?", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


def parse_size(value: int | str) -> int:
    """256MB / 1GiB / 500KB / bytes as an int → bytes. Units are binary (1 MB = 1 MiB), as in the original rivet."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError('must be a size: bytes as an integer, or a string like "256MB"')
    if isinstance(value, int):
        n = value
    else:
        m = _SIZE.fullmatch(value.strip())
        if not m:
            raise ValueError(f'{_short(value)!r} is not a size; write e.g. "256MB", "1GiB", "500KB" or bytes')
        n = int(Decimal(m.group(1)) * _SIZE_UNITS[(m.group(2) or "").upper().replace("I", "")])
    if not 0 < n <= _INT64[1]:
        raise ValueError("must be a size greater than 0 bytes")
    return n


# ---------------------------------------------------------------------------------------------------------------
# The file's shape, as strict pydantic models (nothing is coerced: chunk_size = "ten" is an error, not 10).

def _wrong_type(expected: str) -> PydanticCustomError:
    return PydanticCustomError("wrong_type", "must be {expected}", {"expected": expected})


def _scalar(v: Any) -> Any:
    if isinstance(v, (str, int, float, bool)):
        return v
    raise _wrong_type("a string, number or boolean")


def _key_binding(v: Any) -> str:
    # Textual keymaps take "k1,k2": normalise an array to that form
    if isinstance(v, str) and v.strip():
        return v
    if isinstance(v, list) and v and all(isinstance(k, str) and k.strip() for k in v):
        return ",".join(v)
    raise _wrong_type('a key string or an array of key strings (e.g. "ctrl+r" or ["r", "f5"])')


def _size_value(v: Any) -> int:
    try:
        return parse_size(v)
    except (TypeError, ValueError) as exc:
        raise PydanticCustomError("invalid_value", "{reason}", {"reason": str(exc)}) from None


NonEmpty = Annotated[str, Field(min_length=1)]
Positive = Annotated[int, Field(gt=0)]
NonNegative = Annotated[int, Field(ge=0)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Tuning(_Model):
    """[source.tuning] / [exports.tuning]. As read from the file only the keys written count (`model_fields_set`);
    the loader resolves each export's to a complete one: profile defaults ← [source.tuning] ← [exports.tuning]."""
    profile: Literal["fast", "balanced", "safe"] = "balanced"
    batch_size: Positive | None = None               # rows per batch; None → derived from batch_size_memory_mb
    batch_size_memory_mb: Positive = 32
    statement_timeout_s: NonNegative = 300           # 0 = no timeout
    max_retries: NonNegative = 3
    retry_backoff_ms: NonNegative = 2000
    throttle_ms: NonNegative = 0
    connect_timeout_s: Positive = 10


class _SourceIn(_Model):
    """[source] as written; the loader resolves it to a SourceConfig (url_env / url_file / host… → one URL)."""
    type: SourceType
    environment: Literal["local", "replica", "production"] = "production"
    url: NonEmpty | None = None
    url_env: NonEmpty | None = None
    url_file: NonEmpty | None = None
    host: NonEmpty | None = None
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    user: NonEmpty | None = None
    password_env: NonEmpty | None = None
    database: NonEmpty | None = None
    tuning: Tuning = Field(default_factory=Tuning)
    tls: dict[str, Annotated[Any, AfterValidator(_scalar)]] = Field(default_factory=dict)


_STRUCTURED = ("host", "port", "user", "password_env", "database")


class DestinationConfig(_Model):
    """[exports.destination]. The loader anchors a local `path` and `credentials_file` to the config's directory."""
    type: DestinationType
    path: NonEmpty | None = None             # local: may hold {export} {date} {run_id} (and {partition})
    bucket: NonEmpty | None = None           # s3/gcs bucket, azure container
    prefix: str = ""                         # may hold {export} {date} {run_id} (and {partition})
    region: NonEmpty | None = None
    endpoint: NonEmpty | None = None
    access_key_env: NonEmpty | None = None
    secret_key_env: NonEmpty | None = None
    session_token_env: NonEmpty | None = None
    aws_profile: NonEmpty | None = None
    credentials_file: NonEmpty | None = None  # gcs service account json
    account_name: NonEmpty | None = None
    account_key_env: NonEmpty | None = None
    sas_token_env: NonEmpty | None = None


class ExportConfig(_Model):
    """One [[exports]] entry: the type the engine codes against. The loader checks the rules that span fields and
    fills what the file leaves to it: `query` from `query_file` (made absolute), `compression` and
    `compression_level` resolved (engine/layouts.py), `tuning` merged, `destination` anchored."""
    name: NonEmpty
    destination: DestinationConfig
    table: NonEmpty | None = None            # "schema.table" or "table"
    query: NonEmpty | None = None            # the SQL text (query_file is read into this)
    query_file: NonEmpty | None = None       # absolute path, for display only
    mode: Mode = "full"
    cursor_column: NonEmpty | None = None
    incremental_cursor_mode: Literal["single_column", "coalesce"] = "single_column"
    cursor_fallback_column: NonEmpty | None = None
    chunk_column: NonEmpty | None = None     # None → the single-integer primary key (table exports)
    chunk_size: Positive | None = None
    chunk_count: Positive | None = None
    chunk_by_days: Positive | None = None
    chunk_by_key: NonEmpty | None = None     # keyset pages of chunk_size rows over a unique NOT NULL indexed key
    parallel: Positive = 1
    chunk_checkpoint: bool = True
    chunk_max_attempts: Positive = 3
    time_column: NonEmpty | None = None
    days_window: Positive | None = None
    time_column_type: Literal["timestamp", "unix"] = "timestamp"
    format: Format = "parquet"
    compression: Compression = "zstd"        # csv: always "none"
    max_file_size: Annotated[int | None, BeforeValidator(_size_value)] = None   # bytes; None = one part per unit
    skip_empty: bool = False
    on_schema_drift: Literal["warn", "continue", "fail"] = "warn"
    columns: dict[str, Literal["text", "skip"]] = Field(default_factory=dict)   # per-column override
    tuning: Tuning = Field(default_factory=Tuning)
    quality: QualityConfig | None = None     # [exports.quality] (engine/guardrails.py)
    meta_columns: MetaColumnsConfig | None = None   # [exports.meta_columns] (engine/guardrails.py)
    column_checksums: bool = False           # per-column checksums in the manifest (engine/guardrails.py)
    settle: Annotated[int | None, BeforeValidator(settle_seconds)] = None   # seconds, written "1h" (incremental)
    compression_level: int | None = None     # resolved: zstd 3 unless set (engine/layouts.py)
    compression_profile: Literal["fast", "balanced", "compact"] | None = None
    parquet: ParquetConfig | None = None     # [exports.parquet] row groups (engine/layouts.py)
    max_value_mb: Positive | None = None     # per text/binary value ceiling, checked by the server
    max_batch_memory_mb: Positive | None = None
    on_batch_memory_exceeded: Literal["warn", "fail", "auto_shrink"] = "warn"
    shape_drift_warn_factor: Annotated[float, Field(ge=0)] = 10.0   # 0 = off
    partition_by: str | None = None          # Hive partitions by this date/timestamp column (engine/layouts.py)
    partition_granularity: Literal["day", "month", "year"] = "day"


class ExecutorConfig(_Model):
    type: Literal["local", "dask"] = "local"
    address: NonEmpty | None = None


class RunConfig(_Model):
    parallel_exports: Annotated[int, Field(ge=1, le=64)] = 4   # exports at once; --parallel-exports wins


class _TuiIn(_Model):
    keys: dict[str, Annotated[Any, AfterValidator(_key_binding)]] = Field(default_factory=dict)


class _RootIn(_Model):
    source: _SourceIn
    exports: list[ExportConfig] = Field(default_factory=list)
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    run: RunConfig = Field(default_factory=RunConfig)
    tui: _TuiIn = Field(default_factory=_TuiIn)
    notifications: NotificationsConfig | None = None


# ---------------------------------------------------------------------------------------------------------------
# What the loader resolves.

@dataclass(frozen=True)
class SourceConfig:
    type: str                                # postgres | mysql | mssql
    url: str = field(repr=False)             # resolved connection URL; holds the password: never print it
    environment: str = "production"          # local | replica | production
    tuning: Tuning = field(default_factory=Tuning)
    tls: dict = field(default_factory=dict)  # e.g. {"sslmode": "require"} / mssql {"encrypt": True}

    def masked_url(self) -> str:
        return urls.mask_url(self.url)


@dataclass(frozen=True)
class Config:
    path: Path                               # the config file (absolute)
    source: SourceConfig
    exports: tuple[ExportConfig, ...]
    state_path: Path                         # default <config dir>/.rivet/state.duckdb
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    run: RunConfig = field(default_factory=RunConfig)
    tui_keys: dict = field(default_factory=dict)   # binding id → key(s), from [tui.keys]
    notifications: NotificationsConfig | None = None   # [notifications] (engine/guardrails.py)

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def export(self, name: str) -> ExportConfig:
        for e in self.exports:
            if e.name == name:
                return e
        close = difflib.get_close_matches(name, [e.name for e in self.exports], n=1)
        raise RivetError("RIVET_CONFIG_UNKNOWN_EXPORT", f"no export named {name!r} in {self.path.name}",
                         f"did you mean {close[0]!r}?" if close else
                         "exports: " + ", ".join(e.name for e in self.exports))

    def select(self, names: list[str] | tuple[str, ...] | None) -> list[ExportConfig]:
        return [self.export(n) for n in names] if names else list(self.exports)


# where a misplaced key belongs, for "did you mean" when no spelling is close
_SECTIONS: dict[str, type[BaseModel]] = {
    "the top level": _RootIn, "[source]": _SourceIn, "[source.tuning] or [exports.tuning]": Tuning,
    "[[exports]]": ExportConfig, "[exports.destination]": DestinationConfig, "[executor]": ExecutorConfig,
    "[run]": RunConfig,
    "[tui]": _TuiIn,
}


# ---------------------------------------------------------------------------------------------------------------
# Pointing at lines: errors name the line where the key sits in the raw text.

_KEY_PART = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\\n]|\\.)*"|'[^'\n]*')"""
_DOTTED = rf"{_KEY_PART}(?:\s*\.\s*{_KEY_PART})*"
_AOT_HEADER = re.compile(rf"\s*\[\[\s*({_DOTTED})\s*\]\]")
_HEADER = re.compile(rf"\s*\[\s*({_DOTTED})\s*\]")
_KEY_LINE = re.compile(rf"\s*({_DOTTED})\s*=\s*(.*)")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _split_key(dotted: str) -> tuple[str, ...]:
    return tuple(p[1:-1] if p[0] in "\"'" else p for p in re.findall(_KEY_PART, dotted))


class _TomlIndex:
    """Where each table header and key sits in the raw text. Enough to point at a line; not a TOML parser."""

    def __init__(self, text: str):
        self.entries: list[tuple[int, tuple, str]] = []   # (line, full key path, value text; "" for headers)
        self._lines: dict[tuple, int] | None = None       # full key path → its first line, built on first use
        table: tuple = ()
        arrays: dict[tuple, int] = {}                     # array-of-tables path → index of its latest [[...]]
        closing = ""                                      # inside a multi-line string: its closing quotes
        for n, line in enumerate(text.splitlines(), 1):
            if closing:
                closing = "" if closing in line else closing
                continue
            if m := _AOT_HEADER.match(line):
                *parent, name = _split_key(m.group(1))
                array = self._resolve(parent, arrays) + (name,)
                arrays[array] = arrays.get(array, -1) + 1
                table = array + (arrays[array],)
                self.entries.append((n, table, ""))
            elif m := _HEADER.match(line):
                table = self._resolve(_split_key(m.group(1)), arrays)
                self.entries.append((n, table, ""))
            elif m := _KEY_LINE.match(line):
                value = m.group(2)
                self.entries.append((n, table + _split_key(m.group(1)), value))
                for quotes in ('"""', "'''"):
                    if value.startswith(quotes) and quotes not in value[3:]:
                        closing = quotes

    @staticmethod
    def _resolve(keys, arrays: dict[tuple, int]) -> tuple:
        path: tuple = ()
        for key in keys:
            path += (key,)
            if path in arrays:
                path += (arrays[path],)
        return path

    def line_of(self, loc: tuple) -> int | None:
        """The line of `loc`, else of its nearest enclosing key or table that can be found."""
        if self._lines is None:
            self._lines = {}
            for n, path, _ in self.entries:
                self._lines.setdefault(path, n)          # the first occurrence, as a scan would find
        while loc:
            if (line := self._lines.get(loc)) is not None:
                return line
            if isinstance(loc[-1], str):                 # a key inside an inline table on its parent's line
                key = re.escape(loc[-1])
                inline = re.compile(rf"""[{{,]\s*(?:{key}|"{key}"|'{key}')\s*=""")
                for loose in (False, True):
                    for n, path, value in self.entries:
                        if "{" in value and len(path) < len(loc) and _is_prefix(path, loc, loose) \
                                and inline.search(value):
                            return n
            loc = loc[:-1]
        return None


def _is_prefix(path: tuple, loc: tuple, loose: bool) -> bool:
    if not loose:
        return loc[:len(path)] == path
    keys = tuple(p for p in path if isinstance(p, str))       # arrays of inline tables carry no index in the text
    return tuple(p for p in loc if isinstance(p, str))[:len(keys)] == keys


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _fmt_loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            key = part if _BARE_KEY.fullmatch(part) else json.dumps(part)
            out += ("." if out else "") + _short(key)
    return out


def _toml_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    for kind, name in ((int, "an integer"), (float, "a float"), (str, "a string"), (dict, "a table"),
                       (list, "an array")):
        if isinstance(value, kind):
            return name
    return "a date/time"


_EXPECTED = {  # pydantic error type → (what the key must be, how to write it)
    "int_type": ("an integer", "write a bare number, e.g. 100000 (no quotes)"),
    "string_type": ("a string", 'quote it, e.g. "value"'),
    "bool_type": ("a boolean", "write true or false (no quotes)"),
    "model_type": ("a table", "use a [section] or an inline table { key = value }"),
    "dict_type": ("a table", "use a [section] or an inline table { key = value }"),
    "list_type": ("an array", 'use [ ... ], e.g. ["a", "b"]'),
}
_MISSING_HINTS = {
    "source": 'add [source] with type = "postgres" and url_env = "DATABASE_URL"',
    "type": 'add type = "..." (see the choices in the docs or `rivet init`)',
    "name": 'add name = "orders" (unique; it keys all state)',
    "destination": 'add destination = { type = "local", path = "out/{export}" }',
}
_RANGE = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}


def _model_at(loc: tuple) -> type[BaseModel] | None:
    model: type[BaseModel] | None = _RootIn
    for part in loc:
        if isinstance(part, int):
            continue
        info = model.model_fields.get(part) if model else None
        model = _find_model(info.annotation) if info else None
    return model


def _find_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        if found := _find_model(arg):
            return found
    return None


def _did_you_mean(parent: tuple, name: str) -> str:
    model = _model_at(parent)
    if model is None:
        return ""
    fields = list(model.model_fields)
    home = [section for section, m in _SECTIONS.items() if m is not model and name in m.model_fields]
    if home:
        return f"{name!r} belongs in {home[0]}"
    close = difflib.get_close_matches(name[:100], fields, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}?"
    return "valid keys here: " + ", ".join(fields)


def _describe(err: ErrorDetails) -> tuple[str, tuple, str, str]:
    """One pydantic error → (code, loc, message, hint), in words a TOML author understands."""
    kind, loc, value = err["type"], tuple(err["loc"]), err.get("input")
    key, ctx = _fmt_loc(loc), err.get("ctx") or {}
    if kind == "extra_forbidden":
        return "RIVET_CONFIG_UNKNOWN_KEY", loc, f"unknown key {key}", _did_you_mean(loc[:-1], str(loc[-1]))
    if kind == "missing":
        name = _fmt_loc(loc[-1:])
        message = f"{_fmt_loc(loc[:-1])} is missing required key {name!r}" if loc[:-1] else \
            f"the [{name}] section is missing"
        return "RIVET_CONFIG_MISSING_KEY", loc, message, _MISSING_HINTS.get(name, "`rivet init` writes a starter config")
    if kind in _EXPECTED:
        expected, how = _EXPECTED[kind]
        if loc == ("exports",):
            expected, how = "an array of tables", "declare each export with its own [[exports]] header"
        return "RIVET_CONFIG_INVALID", loc, f"{key} must be {expected}, got {_toml_type(value)}", how
    if kind == "wrong_type":
        return ("RIVET_CONFIG_INVALID", loc, f"{key} must be {ctx['expected']}, got {_toml_type(value)}",
                "fix the value's type")
    if kind in _RANGE:
        bound = next(v for k, v in ctx.items() if k in ("gt", "ge", "lt", "le"))
        return ("RIVET_CONFIG_OUT_OF_RANGE", loc, f"{key} must be {_RANGE[kind]} {bound}, got {value}",
                "use a value in range")
    if kind == "literal_error":
        return ("RIVET_CONFIG_INVALID", loc, f"{key} must be {ctx['expected']}, got {_short(repr(value))}",
                f"choose one of {ctx['expected']}")
    if kind == "string_too_short":
        return "RIVET_CONFIG_INVALID", loc, f"{key} must not be empty", "give a value or remove the key"
    if kind == "invalid_value":
        return "RIVET_CONFIG_INVALID", loc, f"{key} {ctx['reason']}", "fix the value"
    return "RIVET_CONFIG_INVALID", loc, f"{key}: {err['msg']}", "fix the value"


# ---------------------------------------------------------------------------------------------------------------
# Loading.

_REF = re.compile(r"\$\$\{|\$\{([A-Za-z0-9_.-]+)\}|\$\{")
_EXPORT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_URL_SCHEMES = {  # accepted scheme → canonical scheme, per source type
    "postgres": {"postgresql": "postgresql", "postgres": "postgresql"},
    "mysql": {"mysql": "mysql", "mariadb": "mysql"},
    "mssql": {"mssql": "mssql", "sqlserver": "mssql"},
}


class _Loader:
    def __init__(self, path: Path, text: str, params: dict[str, str]):
        self.path, self.base, self.text, self.params = path, path.parent, text, params
        self._index: _TomlIndex | None = None
        self._anchored: dict[str, Path] = {}
        self._tunings: dict[tuple, Tuning] = {}                 # per-export work shared by identical inputs
        self._endpoints_ok: set[str] = set()

    # -- errors --------------------------------------------------------------------------------------------
    def line(self, loc: tuple) -> int | None:
        if self._index is None:
            self._index = _TomlIndex(self.text)
        return self._index.line_of(loc)

    def error(self, code: str, loc: tuple, message: str, hint: str = "") -> RivetError:
        n = self.line(loc) if loc else None
        where = f"{self.path.name} line {n}: " if n else f"{self.path.name}: "
        return RivetError(code, secrets.redact(where + message), secrets.redact(hint), ExitClass.USAGE)

    def first_of(self, problems: list[tuple[str, tuple, str, str]]) -> RivetError:
        """Report the earliest problem in the file; the hint lists a few more."""
        ranked = sorted(problems[:50], key=lambda p: self.line(p[1]) or 1 << 62)
        code, loc, message, hint = ranked[0]
        others = [f"{_short(self._at(p[1]) + p[2], 100)}" for p in ranked[1:4]]
        if others:
            more = len(problems) - 1 - len(others)
            hint += "; also: " + "; ".join(others) + (f" (+{more} more)" if more > 0 else "")
        return self.error(code, loc, message, hint)

    def _at(self, loc: tuple) -> str:
        n = self.line(loc)
        return f"line {n}: " if n else ""

    # -- ${VAR} ------------------------------------------------------------------------------------------
    def expand(self, node: Any, loc: tuple, problems: list) -> Any:
        """Fill ${VAR} in every string (params first, then the environment); check integers fit TOML's 64 bits."""
        if isinstance(node, dict):
            return {k: self.expand(v, loc + (k,), problems) for k, v in node.items()}
        if isinstance(node, list):
            return [self.expand(v, loc + (i,), problems) for i, v in enumerate(node)]
        if isinstance(node, str):
            return self.expand_text(node, loc, problems) if "$" in node else node
        if isinstance(node, int) and not isinstance(node, bool) and not _INT64[0] <= node <= _INT64[1]:
            problems.append(("RIVET_CONFIG_OUT_OF_RANGE", loc, f"{_fmt_loc(loc)} does not fit in 64 bits",
                             "TOML integers are 64-bit"))
        return node

    def expand_text(self, text: str, loc: tuple, problems: list) -> str:
        def fill(m: re.Match) -> str:
            if m.group(0) == "$${":
                return "${"
            name = m.group(1)
            if name is None:
                problems.append(("RIVET_CONFIG_UNRESOLVED_PARAM", loc,
                                 f"{_fmt_loc(loc)} has a '${{' that is not a ${{NAME}} reference",
                                 "write ${NAME} for a parameter, or $${ for a literal ${"))
            elif name in self.params:
                return str(self.params[name])
            elif name in os.environ:
                return os.environ[name]
            else:
                problems.append(("RIVET_CONFIG_UNRESOLVED_PARAM", loc,
                                 f"${{{_short(name)}}} in {_fmt_loc(loc)} is not set",
                                 f"pass -p {_short(name)}=VALUE or set the environment variable {_short(name)}"))
            return m.group(0)
        return _REF.sub(fill, text)   # one pass: a filled value is never expanded again

    # -- files -------------------------------------------------------------------------------------------
    def anchor(self, path: str) -> Path:
        if (known := self._anchored.get(path)) is None:
            p = _expand_user(Path(path))
            known = self._anchored[path] = Path(os.path.normpath(p if p.is_absolute() else self.base / p))
        return known

    def read_text(self, loc: tuple, path: Path) -> str:
        key = _fmt_loc(loc)
        try:
            if path.stat().st_size > _MAX_FILE_BYTES:
                raise self.error("RIVET_CONFIG_INVALID", loc, f"{key}: {path} is larger than 16 MiB",
                                 "point it at the right file")
            return path.read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            raise self.error("RIVET_CONFIG_FILE_NOT_FOUND", loc, f"{key}: {path} does not exist",
                             f"relative paths are anchored to the config directory {self.base}") from None
        except UnicodeDecodeError:
            raise self.error("RIVET_CONFIG_INVALID", loc, f"{key}: {path} is not UTF-8 text",
                             "save the file as UTF-8") from None
        except OSError as exc:
            raise self.error("RIVET_CONFIG_FILE_NOT_FOUND", loc, f"{key}: cannot read {path}: {exc.strerror}",
                             "check the path and its permissions") from None

    # -- source ------------------------------------------------------------------------------------------
    def source(self, s: _SourceIn) -> SourceConfig:
        chosen = [k for k in ("url", "url_env", "url_file") if getattr(s, k) is not None]
        structured = [k for k in _STRUCTURED if getattr(s, k) is not None]
        if structured:
            chosen.append("host/port/user/password_env/database")
        if len(chosen) != 1:
            found = f"found {', '.join(chosen)}" if chosen else "found none"
            raise self.error("RIVET_CONFIG_SOURCE_URL", ("source",),
                             f"[source] needs exactly one of url, url_env, url_file or host/port/user/"
                             f"password_env/database ({found})",
                             'e.g. url_env = "DATABASE_URL" (the name of an environment variable holding the URL)')
        loc: tuple[str, ...]
        if s.url is not None:
            loc, url = ("source", "url"), s.url
        elif s.url_env is not None:
            loc, url = ("source", "url_env"), self.env(("source", "url_env"), s.url_env)
        elif s.url_file is not None:
            loc = ("source", "url_file")
            url = self.read_text(loc, self.anchor(s.url_file)).strip()
            if not url:
                raise self.error("RIVET_CONFIG_INVALID", loc, f"source.url_file: {self.anchor(s.url_file)} is empty",
                                 "write the connection URL into the file")
        else:
            loc, url = ("source",), self.structured_url(s)
        url = self.canonical_url(loc, s.type, url)
        for secret in urls.secrets_in(url):
            secrets.register(secret)
        profile = s.tuning.profile if "profile" in s.tuning.model_fields_set else ENVIRONMENT_PROFILES[s.environment]
        return SourceConfig(type=s.type, url=url, environment=s.environment, tuning=_tuning(profile, s.tuning),
                            tls=dict(s.tls))

    def env(self, loc: tuple, name: str) -> str:
        value = os.environ.get(name)
        if not value:
            state = "empty" if value == "" else "not set"
            raise self.error("RIVET_CONFIG_MISSING_ENV", loc,
                             f"{_fmt_loc(loc)} names the environment variable {_short(name)}, which is {state}",
                             f"export {_short(name)}=... before running rivet")
        secrets.register(value)
        return value

    def structured_url(self, s: _SourceIn) -> str:
        if s.host is None:
            raise self.error("RIVET_CONFIG_SOURCE_URL", ("source",), "[source] has structured connection fields "
                             "but no host", 'add host = "db.example.com" (and port, user, password_env, database)')
        password = self.env(("source", "password_env"), s.password_env) if s.password_env else ""
        secrets.register(quote(password, safe=""))
        userinfo = ""
        if s.user or password:
            userinfo = quote(s.user or "", safe="") + (":" + quote(password, safe="") if password else "") + "@"
        host = f"[{s.host}]" if ":" in s.host and not s.host.startswith("[") else s.host
        port = f":{s.port}" if s.port else ""
        database = "/" + quote(s.database, safe="") if s.database else ""
        return f"{next(iter(_URL_SCHEMES[s.type]))}://{userinfo}{host}{port}{database}"

    def canonical_url(self, loc: tuple, source_type: str, url: str) -> str:
        schemes = _URL_SCHEMES[source_type]
        m = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", url)
        expected = " or ".join(f"{s}://" for s in schemes)
        if not m:
            raise self.error("RIVET_CONFIG_INVALID", loc, f"{_fmt_loc(loc)} does not hold a URL",
                             f"expected {expected}user@host:port/database")
        scheme = m.group(1).lower()
        if scheme not in schemes:
            raise self.error("RIVET_CONFIG_INVALID", loc, f"{_fmt_loc(loc)} uses {_short(scheme)}://, which does "
                             f"not match source type {source_type!r}", f"expected {expected}")
        return schemes[scheme] + url[m.end(1):]

    # -- exports -----------------------------------------------------------------------------------------
    def export(self, i: int, e: ExportConfig, source: _SourceIn, source_profile: str) -> ExportConfig:
        loc = ("exports", i)

        def fail(code: str, key: str, message: str, hint: str) -> RivetError:
            return self.error(code, loc + (key,), f"export {_short(e.name)!r} ({_fmt_loc(loc)}): {message}", hint)

        if not _EXPORT_NAME.fullmatch(e.name):
            raise fail("RIVET_CONFIG_INVALID", "name", "name may only hold letters, digits, '_', '-' and '.' "
                       "(at most 128, not starting with '.' or '-')", "names key state and file names")
        given = [k for k in ("table", "query", "query_file") if getattr(e, k) is not None]
        if len(given) != 1:
            raise fail("RIVET_CONFIG_EXPORT_SOURCE", given[1] if given else "name",
                       f"needs exactly one of table, query or query_file (found {', '.join(given) or 'none'})",
                       'e.g. table = "public.orders" or query_file = "sql/orders.sql"')
        query, query_file = e.query, None
        if e.query_file is not None:
            path = self.anchor(e.query_file)
            problems: list = []
            query = self.expand_text(self.read_text(loc + ("query_file",), path), loc + ("query_file",), problems)
            if problems:
                raise self.first_of(problems)
            if not query.strip():
                raise fail("RIVET_CONFIG_INVALID", "query_file", f"{path} is empty", "write the SELECT into it")
            query_file = str(path)
        if e.settle is not None and e.mode != "incremental":
            raise fail("RIVET_CONFIG_INVALID", "settle", 'settle applies to mode = "incremental" only',
                       "remove settle, or make the export incremental")
        if e.mode == "incremental" and e.cursor_column is None:
            raise fail("RIVET_CONFIG_MISSING_CURSOR", "mode", 'mode = "incremental" needs cursor_column',
                       'add cursor_column = "updated_at" (a column that grows with every change)')
        if e.incremental_cursor_mode == "coalesce" and e.cursor_fallback_column is None:
            raise fail("RIVET_CONFIG_MISSING_FALLBACK", "incremental_cursor_mode",
                       'incremental_cursor_mode = "coalesce" needs cursor_fallback_column',
                       'add cursor_fallback_column = "created_at" (used where cursor_column is NULL)')
        if e.mode == "chunked":
            chunking = [k for k in ("chunk_size", "chunk_count", "chunk_by_days") if getattr(e, k) is not None]
            if len(chunking) > 1:
                raise fail("RIVET_CONFIG_CHUNK_CONFLICT", chunking[1],
                           f"set at most one of chunk_size, chunk_count, chunk_by_days (found {', '.join(chunking)})",
                           "keep the one that says how to split the key range")
            if e.table is None and e.chunk_column is None:
                raise fail("RIVET_CONFIG_CHUNK_COLUMN_REQUIRED", "mode",
                           'mode = "chunked" over a query needs chunk_column',
                           "the chunk column is found automatically (single-integer primary key) only for table "
                           'exports; add chunk_column = "id"')
        if e.mode == "time_window":
            missing = [k for k in ("time_column", "days_window") if getattr(e, k) is None]
            if missing:
                raise fail("RIVET_CONFIG_TIME_WINDOW", "mode", f'mode = "time_window" needs {" and ".join(missing)}',
                           'e.g. time_column = "created_at" and days_window = 7')
        try:   # compression keys and [exports.parquet] (engine/layouts.py)
            written = e.compression if "compression" in e.model_fields_set else None
            compression, level = resolve_compression(e.format, written, e.compression_level, e.compression_profile)
            check_format(e.format, e.parquet)
            check_memory_keys(e)
            check_partition_keys(e)
        except LayoutError as le:
            raise fail(le.code, le.key, le.message, le.hint) from None
        if e.format == "csv" and compression != "none":
            raise fail("RIVET_CONFIG_CSV_COMPRESSION", "compression",
                       f'format = "csv" cannot use compression = "{compression}"',
                       'remove compression (csv is written uncompressed) or use format = "parquet"')
        profile = e.tuning.profile if "profile" in e.tuning.model_fields_set else source_profile
        return e.model_copy(update={
            "destination": self.destination(loc + ("destination",), e.destination), "query": query,
            "query_file": query_file, "compression": compression, "compression_level": level,
            "tuning": self.tuning(profile, source.tuning, e.tuning)})

    def tuning(self, profile: str, source: Tuning, export: Tuning) -> Tuning:
        """_tuning, shared by the exports that write the same [exports.tuning] (Tuning is frozen)."""
        key = (profile, tuple((k, getattr(export, k)) for k in sorted(export.model_fields_set)))
        if (known := self._tunings.get(key)) is None:
            known = self._tunings[key] = _tuning(profile, source, export)
        return known

    def destination(self, loc: tuple, d: DestinationConfig) -> DestinationConfig:
        def fail(code: str, key: str | None, message: str, hint: str) -> RivetError:
            return self.error(code, loc + ((key,) if key else ()), f"{_fmt_loc(loc)}: {message}", hint)

        if d.type == "local" and d.path is None:
            raise fail("RIVET_CONFIG_DESTINATION", "type", 'type = "local" needs path',
                       'e.g. destination = { type = "local", path = "out/{export}" }')
        if d.type in ("s3", "gcs", "azure") and d.bucket is None:
            what = "the container name" if d.type == "azure" else "the bucket name"
            raise fail("RIVET_CONFIG_DESTINATION", "type", f'type = "{d.type}" needs bucket ({what})',
                       'add bucket = "lake"')
        if d.type == "azure" and d.account_name is None and d.endpoint is None:
            raise fail("RIVET_CONFIG_DESTINATION", "type", 'type = "azure" needs account_name (or endpoint)',
                       'add account_name = "mystorageaccount"')
        for key in ("path", "prefix"):
            if problem := urls.placeholder_problem(getattr(d, key) or "", _short):
                raise fail("RIVET_CONFIG_BAD_PLACEHOLDER", key, f"{key} has {problem}",
                           "placeholders: {export} {date} {run_id}")
        if ".." in re.split(r"[/\\]", d.prefix):
            raise fail("RIVET_CONFIG_PATH_TRAVERSAL", "prefix", "prefix must not contain a '..' segment",
                       "write the prefix relative to the bucket root, e.g. raw/{export}/")
        if d.endpoint is not None and d.endpoint not in self._endpoints_ok:   # one check per distinct endpoint
            self.check_endpoint(loc + ("endpoint",), d.endpoint)
            self._endpoints_ok.add(d.endpoint)
        for name in (d.access_key_env, d.secret_key_env, d.session_token_env, d.account_key_env, d.sas_token_env):
            if name:
                secrets.register(os.environ.get(name))
        anchored = {}
        if d.type == "local" and d.path:
            anchored["path"] = str(self.anchor(d.path))
        if d.credentials_file:
            anchored["credentials_file"] = str(self.anchor(d.credentials_file))
        return d.model_copy(update=anchored) if anchored else d

    def check_endpoint(self, loc: tuple, endpoint: str) -> None:
        key = _fmt_loc(loc)
        try:
            parts = urlsplit(endpoint)
            host = parts.hostname
        except ValueError:
            host, parts = None, None
        if parts is None or parts.scheme not in ("http", "https") or not host:
            raise self.error("RIVET_CONFIG_INVALID", loc, f"{key} must be an http(s) URL with a host",
                             'e.g. endpoint = "https://s3.example.com"')
        if parts.scheme == "http" and not urls.is_loopback(host):
            raise self.error("RIVET_CONFIG_INSECURE_ENDPOINT", loc,
                             f"{key} uses plain http to {_short(host)}; credentials and data would cross the "
                             "network unencrypted", "use https://, or http only for 127.0.0.1 / localhost / ::1")


def _expand_user(path: Path) -> Path:
    """~ and ~user expanded; a ~name with no such user (or no home) stays literal, as a shell leaves it."""
    try:
        return path.expanduser()
    except RuntimeError:
        return path


def _tuning(profile: str, *layers: Tuning) -> Tuning:
    """Profile defaults, then each layer's explicitly written fields (source, then export)."""
    values: dict[str, Any] = dict(TUNING_PROFILES[profile])
    for layer in layers:
        values.update(layer.model_dump(exclude_unset=True, exclude={"profile"}))
    return Tuning.model_validate({**values, "profile": profile})


def load_config(path: str | Path, params: dict[str, str] | None = None, state_path: str | Path | None = None) -> Config:
    """Read and validate rivet.toml. Raises RivetError (exit class 1) on any problem.

    Tuning merge: profile defaults (the export's `profile` if it sets one, else the source's, else the one the
    source `environment` implies) ← fields written in [source.tuning] ← fields written in [exports.tuning].
    """
    try:
        return _load(Path(path), dict(params or {}), state_path)
    except RivetError:
        raise
    except (RecursionError, MemoryError):
        raise RivetError("RIVET_CONFIG_PARSE", f"{Path(path).name}: too deeply nested or too large to read",
                         "a rivet.toml is a few flat tables; check that this is the right file") from None
    except Exception as exc:  # a bug in this module: still no traceback for the user
        raise internal(exc) from exc


def _load(path: Path, params: dict[str, str], state_path: str | Path | None) -> Config:
    path = Path(os.path.abspath(_expand_user(path)))
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise RivetError("RIVET_CONFIG_NOT_FOUND", f"config file {path} {what}",
                         "run `rivet init --source URL` to write one, or pass -c PATH")
    try:
        if path.stat().st_size > _MAX_FILE_BYTES:
            raise RivetError("RIVET_CONFIG_PARSE", f"{path.name} is larger than 16 MiB",
                             "a rivet.toml is a few kilobytes; check that this is the right file")
        raw = path.read_bytes()
    except OSError as exc:
        raise RivetError("RIVET_CONFIG_NOT_FOUND", f"cannot read config file {path}: {exc.strerror}",
                         "check the file's permissions") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise RivetError("RIVET_CONFIG_PARSE", f"{path.name} line {line}: not UTF-8 text",
                         "save the file as UTF-8") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _parse_error(path, exc) from None

    loader = _Loader(path, text, params)
    problems: list = []
    data = loader.expand(data, (), problems)
    if problems:
        raise loader.first_of(problems)
    try:
        root = _RootIn.model_validate(data)
    except ValidationError as exc:
        raise loader.first_of([_describe(e) for e in exc.errors(include_url=False)]) from None

    source = loader.source(root.source)
    source_profile = source.tuning.profile
    exports: list[ExportConfig] = []
    seen: dict[str, int] = {}
    for i, e in enumerate(root.exports):
        if e.name in seen:
            raise loader.error("RIVET_CONFIG_DUPLICATE_EXPORT", ("exports", i, "name"),
                               f"export name {_short(e.name)!r} is used twice (exports[{seen[e.name]}] and "
                               f"exports[{i}])", "export names key all state: give each a unique name")
        seen[e.name] = i
        exports.append(loader.export(i, e, root.source, source_profile))

    chosen = state_path if state_path is not None else os.environ.get("RIVET_STATE") or None
    state = loader.anchor(str(chosen)) if chosen else path.parent / ".rivet" / "state.duckdb"
    return Config(path=path, source=source, exports=tuple(exports), state_path=state,
                  executor=root.executor, run=root.run,
                  tui_keys=dict(root.tui.keys), notifications=root.notifications)


def _parse_error(path: Path, exc: tomllib.TOMLDecodeError) -> RivetError:
    text = str(exc)
    m = re.search(r"\(at line (\d+), column (\d+)\)", text)
    reason = text[:m.start()].strip() if m else text.replace("(at end of document)", "").strip()
    where = f"line {m.group(1)}, column {m.group(2)}" if m else "end of file"
    return RivetError("RIVET_CONFIG_PARSE", f"{path.name} {where}: invalid TOML: {reason}",
                      'check quotes, brackets and "="; strings need quotes, each export starts with [[exports]]')
