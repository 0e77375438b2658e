"""Hostile input (issue 8): a corpus plus property-based fuzzing (hypothesis, bounded example counts) of config files,
identifiers and values, cursor values, destination prefixes/paths and plan artifacts.

Every case must either work correctly or fail with a clear RIVET_ error (one line, a code, never
RIVET_INTERNAL_ERROR, never a traceback). None may inject SQL (a canary table in each database survives and every
value round-trips exactly), write outside the destination root, or corrupt state. Counts of cases tried and bugs
found are in tests/reliability/README.md.
"""
from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path

import pytest
import tomli_w
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from engine.config import load_config
from engine.errors import RivetError
from engine.plans import check_applicable, load_plan, plans_from_artifact, seal
from engine.run.runner import Runner
from engine.sql import MySQLDialect, PostgresDialect
from engine.state import StateStore
from tests.reliability.common import Prefix, local_dest, rivet, run_summary, write_config

FUZZ = settings(deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large, HealthCheck.filter_too_much])


def clear_error(e: RivetError, prefix: str = "RIVET_") -> None:
    """What every refusal must look like: a stable code, one line, a hint, and not the bug class."""
    assert e.code.startswith(prefix) and not e.code.startswith("RIVET_INTERNAL"), (e.code, e.message)
    assert "\n" not in e.message and e.message and e.hint is not None, e.message


# -- canaries: a table in each database that an injection would drop ---------------------------------------------

@pytest.fixture(scope="module")
def canaries(pg, mysql):
    pg.sql("CREATE TABLE IF NOT EXISTS rivet_canary (x int)")
    pg.sql("INSERT INTO rivet_canary VALUES (42)")
    mysql.sql("CREATE TABLE IF NOT EXISTS rivet_canary (x int)")
    mysql.sql("INSERT INTO rivet_canary VALUES (42)")
    yield pg, mysql
    assert pg.sql("SELECT x FROM rivet_canary") == [(42,)], "PostgreSQL canary changed: SQL was injected"
    assert mysql.sql("SELECT x FROM rivet_canary") == [(42,)], "MariaDB canary changed: SQL was injected"


HOSTILE_BITS = ["'", '"', "`", "\\", ";", "--", "/*", "*/", "#", "';", "\\'", "''", "\\\\", "$1", "%s", "{}", "${X}",
                "\n", "\r", "\t", " ", "é", "ß", "𝄞", "\u202e", "\ufeff", "DROP TABLE rivet_canary", " OR 1=1 "]
hostile_text = st.lists(st.sampled_from(HOSTILE_BITS) | st.text(max_size=3), max_size=8).map("".join)


# -- config files ----------------------------------------------------------------------------------------------

BASE_CONFIG = {
    "source": {"type": "postgres", "url": "postgresql://u:pw@127.0.0.1:5432/db", "tuning": {"max_retries": 2}},
    "exports": [
        {"name": "a", "table": "t", "mode": "chunked", "chunk_size": 10, "tuning": {"batch_size": 5},
         "destination": {"type": "local", "path": "out", "prefix": "p/{export}/"}, "columns": {"c": "text"}},
        {"name": "b", "query": "SELECT 1", "mode": "incremental", "cursor_column": "x",
         "destination": {"type": "s3", "bucket": "bk", "endpoint": "http://127.0.0.1:9000"}}]}
KEYS = ["type", "url", "url_env", "url_file", "host", "port", "password_env", "environment", "tuning", "tls", "name",
        "table", "query", "query_file", "mode", "cursor_column", "incremental_cursor_mode", "chunk_column",
        "chunk_size", "chunk_count", "chunk_by_days", "parallel", "chunk_max_attempts", "days_window", "format",
        "compression", "max_file_size", "on_schema_drift", "columns", "destination", "path", "bucket", "prefix",
        "endpoint", "access_key_env", "profile", "batch_size", "statement_timeout_s", "exports", "source", "executor",
        "tui", "keys"]
CONFIG_TEXT = hostile_text | st.sampled_from(
    ["../..", "..\\x", "%2e%2e/x", "/etc", "~nouser/x", "x" * 100_000, "{export}", "{nope}", "{", "postgresql://",
     "mysql://root@h/db", "http://10.0.0.1", "256MB", "1e400", "chunked", "local", "${A}", "$${A}", "${"])
SCALAR = (st.integers() | st.integers(min_value=-2**70, max_value=2**70) | st.floats() | st.booleans()
          | CONFIG_TEXT | st.datetimes() | st.dates() | st.times())
VALUE = st.recursive(SCALAR, lambda c: st.lists(c, max_size=3) | st.dictionaries(CONFIG_TEXT, c, max_size=3),
                     max_leaves=8)


def _tables(doc, path=()):
    yield doc
    for v in doc.values():
        if isinstance(v, dict):
            yield from _tables(v)
        elif isinstance(v, list):
            for x in v:
                if isinstance(x, dict):
                    yield from _tables(x)


@st.composite
def mutated_configs(draw) -> dict:
    """The SPEC-shaped config with 1-4 random edits: a key set to any TOML value, a key deleted, or a table
    nested up to 300 levels deep."""
    doc = copy.deepcopy(BASE_CONFIG)
    for _ in range(draw(st.integers(1, 4))):
        table = draw(st.sampled_from(list(_tables(doc))))
        op = draw(st.sampled_from(["set", "set", "del", "deep"]))
        if op == "del" and table:
            del table[draw(st.sampled_from(sorted(table)))]
        elif op == "deep":
            node = root = {}
            for _ in range(draw(st.integers(1, 300))):
                node["n"] = {}
                node = node["n"]
            table[draw(st.sampled_from(KEYS))] = root
        else:
            table[draw(st.sampled_from(KEYS) | CONFIG_TEXT)] = draw(VALUE)
    return doc


@settings(FUZZ, max_examples=300)
@given(doc=mutated_configs(), params=st.dictionaries(st.sampled_from(["A", "X"]), hostile_text, max_size=2))
def test_fuzzed_config_loads_or_fails_clearly(tmp_path, doc, params):
    try:
        text = tomli_w.dumps(doc)
    except (TypeError, ValueError):   # not representable as TOML (e.g. a key tomli_w cannot write)
        return
    path = tmp_path / "rivet.toml"
    path.write_text(text)
    try:
        config = load_config(path, params)
    except RivetError as e:
        clear_error(e, "RIVET_CONFIG_")
        return
    for exp in config.exports:   # accepted: still nothing that can leave the destination root
        assert ".." not in exp.destination.prefix.replace("\\", "/").split("/")


VALID_TOML = b"""[source]
type = "postgres"
url = "postgresql://u@127.0.0.1/db"

[[exports]]
name = "a"
table = "t"
destination = { type = "local", path = "out", prefix = "{export}/" }
"""


@settings(FUZZ, max_examples=200)
@given(data=st.binary(max_size=400)
       | st.builds(lambda flips, cut: bytes(_flip(VALID_TOML, flips))[:cut],
                   st.lists(st.tuples(st.integers(0, len(VALID_TOML) - 1), st.integers(0, 255)), min_size=1,
                            max_size=4), st.integers(0, len(VALID_TOML))))
def test_damaged_config_bytes_fail_clearly(tmp_path, data):
    path = tmp_path / "rivet.toml"
    path.write_bytes(data)
    try:
        load_config(path)
    except RivetError as e:
        clear_error(e)


def _flip(data: bytes, flips) -> bytearray:
    out = bytearray(data)
    for i, v in flips:
        out[i] = v
    return out


CONFIG_CORPUS = {
    "deeply_nested_tables": ("[" + ".".join(["t"] * 5000) + "]\nx = 1\n", "RIVET_CONFIG_"),
    "deeply_nested_arrays": ("x = " + "[" * 20000 + "]" * 20000 + "\n", "RIVET_CONFIG_PARSE"),
    "huge_integer": ('[source]\ntype = "postgres"\nurl = "postgresql://h/db"\n[source.tuning]\n'
                     "max_retries = 99999999999999999999\n", "RIVET_CONFIG_OUT_OF_RANGE"),
    "int64_overflow_value": ('[source]\ntype = "postgres"\nurl = "postgresql://h/db"\n[source.tuning]\n'
                             "max_retries = 9223372036854775807\n[[exports]]\nname = \"a\"\ntable = \"t\"\n"
                             "chunk_size = -9223372036854775808\ndestination = { type = \"local\", path = \"o\" }\n",
                             "RIVET_CONFIG_"),
    "huge_string": ('[source]\ntype = "postgres"\nurl = "postgresql://h/db"\n[[exports]]\nname = "'
                    + "n" * 2_000_000 + '"\ntable = "t"\ndestination = { type = "local", path = "o" }\n',
                    "RIVET_CONFIG_INVALID"),
    "nul_in_name": ('[source]\ntype = "postgres"\nurl = "postgresql://h/db"\n[[exports]]\nname = "a\\u0000b"\n'
                    'table = "t"\ndestination = { type = "local", path = "o" }\n', "RIVET_CONFIG_INVALID"),
    "unicode_keys_and_rtl": ('[source]\ntype = "postgres"\nurl = "postgresql://h/db"\n"\u202eepyt" = 1\n',
                             "RIVET_CONFIG_UNKNOWN_KEY"),
    # LOOP_A="${LOOP_B}", LOOP_B="${LOOP_A}": filled in one pass (no loop), the text is then no URL
    "var_loop_env": ('[source]\ntype = "postgres"\nurl = "${LOOP_A}"\n', "RIVET_CONFIG_INVALID"),
    "var_unresolved": ('[source]\ntype = "postgres"\nurl = "postgresql://h/${NOPE_NOT_SET}"\n',
                       "RIVET_CONFIG_UNRESOLVED_PARAM"),
    "prefix_dotdot": ('[source]\ntype = "postgres"\nurl = "postgresql://h/db"\n[[exports]]\nname = "a"\ntable = "t"\n'
                      'destination = { type = "local", path = "o", prefix = "x/../../../etc" }\n',
                      "RIVET_CONFIG_PATH_TRAVERSAL"),
    "prefix_backslash_dotdot": ('[source]\ntype = "postgres"\nurl = "postgresql://h/db"\n[[exports]]\nname = "a"\n'
                                'table = "t"\ndestination = { type = "s3", bucket = "b", prefix = "..\\\\x" }\n',
                                "RIVET_CONFIG_PATH_TRAVERSAL"),
    "export_name_traversal": ('[source]\ntype = "postgres"\nurl = "postgresql://h/db"\n[[exports]]\nname = "../x"\n'
                              'table = "t"\ndestination = { type = "local", path = "o/{export}" }\n',
                              "RIVET_CONFIG_INVALID"),
    "binary_garbage": ("\x00\x01\x02\xff\xfe rivet", "RIVET_CONFIG_PARSE"),
}


@pytest.mark.parametrize("case", list(CONFIG_CORPUS))
def test_config_corpus_through_the_cli(tmp_path, case):
    text, code = CONFIG_CORPUS[case]
    cfg = tmp_path / "rivet.toml"
    cfg.write_bytes(text.encode("utf-8", "surrogateescape") if case != "binary_garbage" else text.encode("latin-1"))
    proc = rivet("run", "-c", cfg, "--no-tui", "--json-errors", env={"LOOP_A": "${LOOP_B}", "LOOP_B": "${LOOP_A}"})
    assert "Traceback" not in proc.stderr
    err = json.loads(proc.stderr.strip().splitlines()[-1])
    assert proc.returncode == 1, proc.stderr
    assert err["code"].startswith(code), err
    assert not (tmp_path / ".rivet").exists(), "a config error must not create or touch state"


# -- identifiers and values on the live servers ----------------------------------------------------------------

@settings(FUZZ, max_examples=300)
@given(value=hostile_text, name=hostile_text.filter(lambda s: len(s.encode()) <= 60))
def test_literals_and_identifiers_round_trip_exactly(canaries, value, name):
    """SELECT <literal(v)> AS <quote_ident(n)> returns exactly v under exactly n: nothing was interpreted."""
    pg, my = canaries
    for dialect, db in ((PostgresDialect(), pg), (MySQLDialect(), my)):
        try:
            sql = f"SELECT {dialect.literal(value)} AS {dialect.quote_ident(name or 'x')}"
        except RivetError as e:   # only a NUL byte may be refused
            clear_error(e)
            assert "\x00" in value + name
            continue
        if dialect.name == "postgres":
            import psycopg
            with psycopg.connect(db.url, autocommit=True) as con:
                cur = con.execute(sql)
                rows, col = cur.fetchall(), cur.description[0].name
            assert col == (name or "x")
        else:
            con = db.connect()
            try:
                cur = con.cursor()
                try:
                    cur.execute(sql)
                except Exception as e:  # noqa: BLE001 - MariaDB refuses 4-byte characters in names
                    assert "1300" in str(e) or "Invalid utf8" in str(e), e
                    continue
                rows = cur.fetchall()
            finally:
                con.close()
        got = [tuple(v.decode() if isinstance(v, (bytes, bytearray)) else v for v in r) for r in rows]
        assert got == [(value,)], (dialect.name, value, got)


HOSTILE_NAMES = ['we"ird; DROP TABLE rivet_canary; --', "back`tick'); DROP TABLE rivet_canary; #", "semi;colon/*x*/"]


@pytest.mark.parametrize("source_type", ["postgres", "mysql"])
def test_hostile_table_and_column_names_through_real_runs(tmp_path, canaries, source_type):
    pg, my = canaries
    db, d = (pg, PostgresDialect()) if source_type == "postgres" else (my, MySQLDialect())
    table = HOSTILE_NAMES[0] if source_type == "postgres" else HOSTILE_NAMES[1]
    idc, curc = "i'd\\; --", 'cur"sor`; DROP TABLE rivet_canary'
    db.sql(f"DROP TABLE IF EXISTS {d.quote_ident(table)}")
    db.sql(f"CREATE TABLE {d.quote_ident(table)} ({d.quote_ident(idc)} int PRIMARY KEY, {d.quote_ident(curc)} int)")
    db.sql(f"INSERT INTO {d.quote_ident(table)} VALUES (1, 10), (2, 20), (3, 30)")
    quoted_table = d.quote_char + table.replace(d.quote_char, d.quote_char * 2) + d.quote_char
    for mode, extra in (("incremental", f"cursor_column = {json.dumps(curc)}"),
                        ("chunked", f"chunk_column = {json.dumps(idc)}\nchunk_size = 2")):
        cfg = write_config(tmp_path / f"{mode}.toml", f"""
[source]
type = "{source_type}"
url = "{db.url}"

[[exports]]
name = "{mode}"
table = {json.dumps(quoted_table)}
mode = "{mode}"
{extra}
destination = {{ type = "local", path = "out-{mode}" }}
""")
        proc = rivet("run", "-c", cfg, "--no-tui", "--json")
        assert proc.returncode == 0, proc.stderr
        assert run_summary(proc)["rows"] == 3
        prefix = Prefix.of(local_dest(tmp_path / f"out-{mode}"), mode)
        assert sorted(prefix.manifest_values(idc)) == [1, 2, 3]
    db.sql(f"DROP TABLE {d.quote_ident(table)}")


# -- hostile cursor values through real incremental runs ------------------------------------------------------

def _incremental(tmp: Path, db, source_type: str, table: str) -> tuple:
    cfg = write_config(tmp / "rivet.toml", f"""
[source]
type = "{source_type}"
url = "{db.url}"

[[exports]]
name = "h"
table = "{table}"
mode = "incremental"
cursor_column = "cur"
destination = {{ type = "local", path = "out" }}
""")
    config = load_config(cfg)
    store = StateStore(config.state_path)
    result = Runner(config, store).run()[0]
    return result, store


# a suffix that starts with a printable, non-space character: appended to the stored cursor it makes a value that
# is greater in byte order (the column collations are binary: "C" / utf8mb4_bin), so it must be exported next
suffixes = st.tuples(st.sampled_from(list("'\";\\-/*#`)(")), hostile_text).map("".join)


@pytest.mark.parametrize("source_type", ["postgres", "mysql"])
def test_hostile_cursor_values_never_inject_and_never_lose_rows(tmp_path, canaries, source_type):
    pg, my = canaries
    db = pg if source_type == "postgres" else my
    column = 'text COLLATE "C"' if source_type == "postgres" else "VARCHAR(400) COLLATE utf8mb4_bin"
    tried = {"n": 0}

    @settings(FUZZ, max_examples=6)
    @example(first=["a'; DROP TABLE rivet_canary; --", "b\\", "b\\'"], later=["'; --", "\\'", "/*"])
    @example(first=["c\x00d", "c"], later=["'x"])   # MariaDB: the stored cursor holds a NUL byte
    @given(first=st.lists(hostile_text.filter(bool), min_size=1, max_size=5, unique=True),
           later=st.lists(suffixes, min_size=1, max_size=4, unique=True))
    def prop(first, later):
        if source_type == "postgres":   # PostgreSQL text cannot hold NUL at all
            first = [v.replace("\x00", "") or "x" for v in first]
            later = [v.replace("\x00", "") for v in later]
            first = list(dict.fromkeys(first))
        tried["n"] += 1
        table = f"hcur_{uuid.uuid4().hex[:8]}"
        db.sql(f"CREATE TABLE {table} (id int PRIMARY KEY, cur {column})")
        for i, v in enumerate(first):
            db.sql(f"INSERT INTO {table} VALUES (%s, %s)", (i, v))
        tmp = tmp_path / table
        tmp.mkdir()
        result, store = _incremental(tmp, db, source_type, table)
        assert result.status == "succeeded" and result.rows == len(first), result.error
        cursor = store.get_export_state("h")["last_cursor_value"]
        assert cursor == max(first)
        new = list(dict.fromkeys(cursor + s for s in later))
        for i, v in enumerate(new):
            db.sql(f"INSERT INTO {table} VALUES (%s, %s)", (100 + i, v))
        result, store = _incremental(tmp, db, source_type, table)
        if "\x00" in cursor:   # MariaDB text can hold NUL, SQL text cannot: refused clearly, state untouched
            assert result.status == "failed"
            clear_error(result.error, "RIVET_SQL_NUL_IN_VALUE")
            assert store.get_export_state("h")["last_cursor_value"] == cursor
        else:
            assert result.status == "succeeded", result.error
            prefix = Prefix.of(local_dest(tmp / "out"), "h")
            latest = [prefix.latest]
            got = dict(zip(prefix.manifest_values("id", latest), prefix.manifest_values("cur", latest)))
            # every new row, exactly; an old row only again when the server orders it above the cursor (MariaDB
            # PAD SPACE: "'" > "'\n"), which is at-least-once, never a gap
            fresh = set(range(100, 100 + len(new)))
            assert fresh <= set(got) <= fresh | set(range(len(first)))
            assert store.get_export_state("h")["last_cursor_value"] == max(got.values())
        db.sql(f"DROP TABLE {table}")
    prop()
    assert tried["n"] >= 8


# -- destination prefixes and paths --------------------------------------------------------------------------

PREFIX_BITS = ["..", ".", "%2e%2e", "..%2f", "%2f", "a", "~", "", "\\", "..\\", "\u2025", "\u2024\u2024", "{export}",
               "{run_id}", "{date}", "..;", "...", " ..", "\x7f", "/", "//", "\u2215..", "c:", "?", "#"]


@pytest.fixture(scope="module")
def tiny(pg):
    pg.sql("CREATE TABLE IF NOT EXISTS hostile_tiny (id int PRIMARY KEY)")
    pg.sql("INSERT INTO hostile_tiny SELECT g FROM generate_series(1, 3) g ON CONFLICT DO NOTHING")
    return pg


@settings(FUZZ, max_examples=40)
@given(segments=st.lists(st.sampled_from(PREFIX_BITS), min_size=1, max_size=5),
       sep=st.sampled_from(["/", "\\", "/./"]), absolute=st.booleans())
def test_hostile_prefixes_never_escape_the_destination_root(tmp_path, tiny, segments, sep, absolute):
    prefix = ("/" if absolute else "") + sep.join(segments)
    work = tmp_path / uuid.uuid4().hex[:8]
    cfg_dir = work / "cfg"
    cfg_dir.mkdir(parents=True)
    cfg = write_config(cfg_dir / "rivet.toml", f"""
[source]
type = "postgres"
url = "{tiny.url}"

[[exports]]
name = "p"
table = "hostile_tiny"
destination = {{ type = "local", path = "root", prefix = {json.dumps(prefix)} }}
""")
    try:
        config = load_config(cfg)
        result = Runner(config, StateStore(config.state_path)).run()[0]
    except RivetError as e:
        clear_error(e)
        return
    if result.error:
        clear_error(result.error)
    root = (cfg_dir / "root").resolve()
    written = [p for p in work.rglob("*") if p.is_file()]
    for p in written:
        if p == cfg or p.is_relative_to(cfg_dir / ".rivet"):
            continue
        assert p.resolve().is_relative_to(root), f"prefix {prefix!r} wrote {p} outside {root}"
    assert sorted(x.name for x in tmp_path.iterdir() if x.is_file()) == []


def test_local_path_with_dotdot_lands_exactly_where_it_says(tmp_path, tiny):
    """`path` is the operator's choice of root: '..' in it is resolved against the config directory, nothing more."""
    cfg_dir = tmp_path / "cfg"
    cfg_dir.mkdir()
    cfg = write_config(cfg_dir / "rivet.toml", f"""
[source]
type = "postgres"
url = "{tiny.url}"

[[exports]]
name = "p"
table = "hostile_tiny"
destination = {{ type = "local", path = "a/../../outside/{{export}}", prefix = "x/" }}
""")
    assert rivet("run", "-c", cfg, "--no-tui", "--json").returncode == 0
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()
                   and ".rivet" not in p.parts and p.name != "rivet.toml")
    assert files and all(f.startswith("outside/p/x/") for f in files), files


# -- plan artifacts --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sealed_plan(tmp_path_factory, tiny):
    work = tmp_path_factory.mktemp("plan")
    cfg = write_config(work / "rivet.toml", f"""
[source]
type = "postgres"
url = "{tiny.url}"

[[exports]]
name = "c"
table = "hostile_tiny"
mode = "chunked"
chunk_size = 2
destination = {{ type = "local", path = "out" }}

[[exports]]
name = "i"
table = "hostile_tiny"
mode = "incremental"
cursor_column = "id"
destination = {{ type = "local", path = "out-i" }}
""")
    rivet("plan", "-c", cfg, "-o", work / "plan.json", check=0)
    return cfg, (work / "plan.json").read_bytes()


def _json_paths(o, path=()):
    if path:
        yield path
    if isinstance(o, dict):
        for k, v in o.items():
            yield from _json_paths(v, path + (k,))
    elif isinstance(o, list):
        for i, v in enumerate(o):
            yield from _json_paths(v, path + (i,))


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
                    max_leaves=6)


def _try_apply_checks(path: Path, config, store) -> None:
    """Everything `rivet apply` does before it runs anything."""
    try:
        artifact = load_plan(path)
        check_applicable(artifact, config, store, force=True)
        plans_from_artifact(artifact, config)
    except RivetError as e:
        clear_error(e)


@settings(FUZZ, max_examples=300)
@given(data=st.data())
def test_damaged_plan_artifacts_fail_clearly(tmp_path, sealed_plan, data):
    cfg, good = sealed_plan
    config = load_config(cfg)
    store = StateStore(tmp_path / "state.duckdb")
    kind = data.draw(st.sampled_from(["flip", "cut", "json", "resealed"]))
    if kind == "flip":
        flips = data.draw(st.lists(st.tuples(st.integers(0, len(good) - 1), st.integers(0, 255)), min_size=1,
                                   max_size=3))
        blob = bytes(_flip(good, flips))
    elif kind == "cut":
        blob = good[:data.draw(st.integers(0, len(good) - 1))]
    elif kind == "json":
        blob = json.dumps(data.draw(JSON)).encode()
    else:   # sealed again after the edit: the integrity hash holds, the body is broken
        artifact = json.loads(good)
        paths = [p for p in _json_paths(artifact) if p[0] != "integrity"]
        for path in data.draw(st.lists(st.sampled_from(paths), min_size=1, max_size=3)):
            parent = artifact
            try:
                for k in path[:-1]:
                    parent = parent[k]
                if data.draw(st.booleans()):
                    del parent[path[-1]]
                else:
                    parent[path[-1]] = data.draw(JSON)
            except (KeyError, IndexError, TypeError):
                pass
        blob = json.dumps(seal(artifact)).encode()
    path = tmp_path / "plan.json"
    path.write_bytes(blob)
    _try_apply_checks(path, config, store)


@pytest.mark.parametrize("damage", ["invalid_utf8", "truncated", "random_json", "resealed_broken_task", "edited_sql"])
def test_damaged_plan_is_never_applied(tmp_path, sealed_plan, canaries, damage):
    cfg, good = sealed_plan
    artifact = json.loads(good)
    if damage == "invalid_utf8":
        blob = good[:100] + b"\xc0\xff" + good[102:]
    elif damage == "truncated":
        blob = good[: len(good) // 2]
    elif damage == "random_json":
        blob = json.dumps({"plan_version": 1, "exports": [{"tasks": "DROP TABLE rivet_canary"}]}).encode()
    elif damage == "resealed_broken_task":
        artifact["exports"][0]["tasks"][0] = {"index": "0", "sql": ["DROP TABLE rivet_canary"]}
        blob = json.dumps(seal(artifact)).encode()
    else:   # edited without resealing: the integrity hash catches it, --force cannot override
        artifact["exports"][0]["tasks"][0]["sql"] = "SELECT 1; DROP TABLE rivet_canary"
        blob = json.dumps(artifact).encode()
    plan = tmp_path / "plan.json"
    plan.write_bytes(blob)
    proc = rivet("apply", plan, "-c", cfg, "--force", "--json-errors")
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    err = json.loads(proc.stderr.strip().splitlines()[-1])
    assert err["code"] in ("RIVET_PLAN_INVALID", "RIVET_PLAN_TAMPERED"), err
    out = cfg.parent / "out"
    assert not out.exists() or not any(out.rglob("*.parquet")), "a damaged plan was applied"

