"""The SQL Server adapter as far as it can be tested with no SQL Server (none installs on this machine):

- rows shaped exactly as pymssql 2.4.6 returns them (tuples of Python values; see the driver's convert_db_value)
  become record batches of exactly the planned schema, `batch_rows` at a time;
- errors shaped exactly as pymssql raises them ((number, b'FreeTDS text')) get the right code and exit class;
- real connection attempts through pymssql/FreeTDS to endpoints that are no SQL Server (closed port, mute server,
  a server speaking another protocol) fail fast with RIVET_SOURCE_UNREACHABLE and never show the password;
- URL and TLS options map to FreeTDS settings or are refused with a reason.
tests/mssql/ runs the adapter against a real server when RIVET_TEST_MSSQL_URL is set.
"""
from __future__ import annotations

import datetime as dt
import json
import socket
import threading
import time
import uuid
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pymssql
import pytest

from engine.config import SourceConfig, Tuning
from engine.errors import ExitClass, RivetError
from engine.secrets import register
from engine.sources import open_source
from engine.sources.base import Relation, SourceColumn
from engine.sources.mssql import MssqlSource, classify, encryption_for, parse_url, record_batches
from engine.sql import MssqlDialect
from engine.types import NATIVE_TYPE_KEY, map_columns, output_schema
from tests.helpers import rivet, write_config

SECRET = "Sup3r-s3cret-Pw!"
FAST = Tuning(statement_timeout_s=5, connect_timeout_s=2)
WHERE = "mssql 127.0.0.1:1433/shop"

# one column per SQL Server type, in the order a table would declare them
COLUMNS = [("b", "bit"), ("u8", "tinyint"), ("i16", "smallint"), ("i32", "int"), ("i64", "bigint"),
           ("d38", "decimal(38,10)"), ("d38_0", "decimal(38,0)"), ("m", "money"), ("sm", "smallmoney"),
           ("f", "float"), ("r", "real"), ("c", "char(5)"), ("vc", "varchar(max)"), ("nvc", "nvarchar(max)"),
           ("nt", "ntext"), ("dd", "date"), ("t7", "time(7)"), ("t3", "time(3)"), ("dtm", "datetime"),
           ("sdt", "smalldatetime"), ("dt7", "datetime2(7)"), ("dt3", "datetime2(3)"), ("dto", "datetimeoffset(7)"),
           ("g", "uniqueidentifier"), ("bin", "binary(4)"), ("vb", "varbinary(max)"), ("x", "xml"),
           ("rv", "timestamp")]

# what pymssql hands back for each column, after the select_expr rivet sends (money → decimal, time(7) →
# nanoseconds, datetime2(7)/datetimeoffset → ISO text, uniqueidentifier → char(36), xml → nvarchar)
ROW = (True, 255, -32768, -2147483648, -(2**63),
       Decimal("-9999999999999999999999999999.9999999999"), Decimal("99999999999999999999999999999999999999"),
       Decimal("-922337203685477.5808"), Decimal("214748.3647"),
       1.7976931348623157e308, 3.4028234663852886e38, "ab   ", "x" * 10_000, "naïve ✓ 中文 \U0001F600", "ntext",
       dt.date(1, 1, 1), 86_399_999_999_900, dt.time(23, 59, 59, 999000), dt.datetime(1753, 1, 1, 0, 0, 0, 3000),
       dt.datetime(2079, 6, 6, 23, 59), "9999-12-31T23:59:59.9999999", dt.datetime(2024, 2, 29, 12, 0, 0, 123000),
       "2024-01-02T03:04:05.1234567-14:00", "6F9619FF-8B86-D011-B42D-00C04FC964FF", b"\x00\x01\x02\x03",
       b"\x00" * 70_000, "<a b=\"1\">t</a>", b"\x00\x00\x00\x00\x00\x00\x07\xd1")


def schema() -> pa.Schema:
    mappings = map_columns("mssql", [SourceColumn(n, t) for n, t in COLUMNS], {}, MssqlDialect())
    return output_schema(mappings)


class RowSource:
    """Hands out rows the way a pymssql cursor does: fetchmany(n) → a list of at most n tuples, [] at the end.
    Records what was asked so the test can see nothing was fetched ahead."""

    def __init__(self, rows):
        self.rows, self.pos, self.asked = iter(rows), 0, []

    def fetchmany(self, n):
        self.asked.append(n)
        out = []
        for row in self.rows:
            out.append(row)
            if len(out) == n:
                break
        self.pos += len(out)
        return out


def test_batches_from_pymssql_rows_no_server(tmp_path):
    s = schema()
    nulls = tuple(None for _ in COLUMNS)
    rows = [ROW, nulls] * 5 + [ROW]            # 11 rows
    src = RowSource(rows)
    batches = list(record_batches(src.fetchmany, s, 4))
    assert [b.num_rows for b in batches] == [4, 4, 3]
    assert src.asked == [4, 4, 4, 4]            # one batch at a time, never more than batch_rows
    for b in batches:
        assert b.schema.equals(s, check_metadata=True)
    table = pa.Table.from_batches(batches)
    # time(7) holds nanoseconds, which Python's time cannot: compare the raw value, the rest as Python values
    assert table.column("t7")[0].value == 86_399_999_999_900 and table.column("t7")[1].value is None
    got = table.drop_columns(["t7"]).to_pylist()
    assert got[1] == dict.fromkeys(n for n in s.names if n != "t7")   # NULL in every type stays NULL
    want = dict(zip(s.names, ROW))
    del want["t7"]
    assert got[0] == want
    # every column kept its declared SQL Server type as field metadata, through a Parquet file too
    pq.write_table(table, tmp_path / "x.parquet")
    back = pq.read_table(tmp_path / "x.parquet")
    assert back.schema.field("dt7").metadata[NATIVE_TYPE_KEY] == b"datetime2(7)"
    assert back.column("d38").to_pylist()[0] == Decimal("-9999999999999999999999999999.9999999999")
    assert back.column("dto").to_pylist()[0] == "2024-01-02T03:04:05.1234567-14:00"


def test_batches_are_lazy_and_bounded():
    s = pa.schema([pa.field("id", pa.int64())])
    src = RowSource((i,) for i in range(1_000_000))
    it = record_batches(src.fetchmany, s, 1000)
    first = next(it)
    assert first.num_rows == 1000 and src.pos == 1000      # nothing fetched beyond the batch handed out
    assert sum(b.num_rows for b in it) == 999_000


def test_empty_result_yields_no_batch():
    assert list(record_batches(RowSource([]).fetchmany, schema(), 10)) == []


def test_typed_values_in_a_text_column_become_their_text():
    # a coalesce cursor over datetime2(7) / uniqueidentifier columns arrives typed (COALESCE has no select_expr)
    s = pa.schema([pa.field("__rivet_cursor", pa.string())])
    rows = [(dt.datetime(2024, 1, 2, 3, 4, 5, 120000),), (uuid.UUID("6f9619ff-8b86-d011-b42d-00c04fc964ff"),),
            (None,), ("already text",)]
    [b] = record_batches(RowSource(rows).fetchmany, s, 10)
    assert b.column(0).to_pylist() == ["2024-01-02T03:04:05.120000", "6F9619FF-8B86-D011-B42D-00C04FC964FF", None,
                                       "already text"]


@pytest.mark.parametrize("native, value", [
    ("decimal(10,2)", Decimal("1.234")),          # more scale than declared: never silently rounded
    ("tinyint", 256),
    ("int", "not a number"),
])
def test_a_value_that_does_not_fit_fails_naming_the_column(native, value):
    s = output_schema(map_columns("mssql", [SourceColumn("amount", native)], {}, MssqlDialect()))
    with pytest.raises(RivetError) as e:
        list(record_batches(RowSource([(value,)]).fetchmany, s, 10))
    assert e.value.code == "RIVET_SOURCE_UNREPRESENTABLE" and "column amount" in e.value.message
    assert '[exports.columns] amount = "text"' in e.value.hint


def test_column_count_change_is_drift():
    with pytest.raises(RivetError) as e:
        list(record_batches(RowSource([(1, 2)]).fetchmany, pa.schema([("a", pa.int64())]), 10))
    assert e.value.code == "RIVET_SOURCE_SCHEMA_CHANGED" and e.value.exit_class == ExitClass.DRIFT


# ---- errors, shaped as pymssql raises them --------------------------------------------------------------------------

def op(number: int, text: str) -> pymssql.OperationalError:
    return pymssql.OperationalError((number, text.encode()))


GENERAL = "DB-Lib error message 20018, severity 16:\nGeneral SQL Server error: Check messages from the SQL Server\n"


@pytest.mark.parametrize("exc, connecting, code, exit_class, transient", [
    (op(18456, "Login failed for user 'rivet'." + GENERAL.replace("16", "14")
        + "DB-Lib error message 20002, severity 9:\nAdaptive Server connection failed (db)\n"),
     True, "RIVET_SOURCE_AUTH", 1, False),
    (op(4060, 'Cannot open database "nope" requested by the login. The login failed.' + GENERAL),
     True, "RIVET_SOURCE_AUTH", 1, False),   # a failed login keeps its reason from the client
    (op(911, "Database 'nope' does not exist. Make sure that the name is entered correctly." + GENERAL),
     False, "RIVET_SOURCE_NO_SUCH_DATABASE", 1, False),
    (op(20009, "DB-Lib error message 20009, severity 9:\nUnable to connect: TDS server is unavailable or does not "
        "exist (db)\nNet-Lib error during Connection refused (111)\n"), True, "RIVET_SOURCE_UNREACHABLE", 2, True),
    (op(20002, "DB-Lib error message 20003, severity 6:\nTDS server connection timed out (db)\n"
        "DB-Lib error message 20002, severity 9:\nTDS server connection failed (db)\n"),
     True, "RIVET_SOURCE_UNREACHABLE", 2, True),
    (op(208, "Invalid object name 'dbo.nope'." + GENERAL), False, "RIVET_SOURCE_NO_SUCH_TABLE", 1, False),
    (op(1205, "Transaction (Process ID 53) was deadlocked on lock resources with another process and has been "
        "chosen as the deadlock victim. Rerun the transaction." + GENERAL), False, "RIVET_SOURCE_BUSY", 2, True),
    (op(1222, "Lock request time out period exceeded." + GENERAL), False, "RIVET_SOURCE_BUSY", 2, True),
    (op(40613, "Database 'db' on server 'x' is not currently available." + GENERAL), False, "RIVET_SOURCE_BUSY", 2,
     True),
    (op(20003, "DB-Lib error message 20003, severity 6:\nAdaptive Server connection timed out\n"),
     False, "RIVET_SOURCE_TIMEOUT", 2, False),
    (op(20047, "DB-Lib error message 20047, severity 9:\nDBPROCESS is dead or not enabled\n"),
     False, "RIVET_SOURCE_CONNECTION_LOST", 2, True),
    (op(20004, "DB-Lib error message 20004, severity 9:\nRead from the server failed\nNet-Lib error during "
        "Connection reset by peer (104)\n"), False, "RIVET_SOURCE_CONNECTION_LOST", 2, True),
    (op(8156, "The column 'id' was specified multiple times for 'rivet_q'." + GENERAL),
     False, "RIVET_SOURCE_DUPLICATE_COLUMN", 1, False),
    (op(229, "The SELECT permission was denied on the object 'orders', database 'shop', schema 'dbo'." + GENERAL),
     False, "RIVET_SOURCE_QUERY", 1, False),
    (op(1033, "The ORDER BY clause is invalid in views, inline functions, derived tables, subqueries, and common "
        "table expressions, unless TOP, OFFSET or FOR XML is also specified." + GENERAL),
     False, "RIVET_SOURCE_QUERY", 1, False),
    (op(102, "Incorrect syntax near ')'." + GENERAL), False, "RIVET_SOURCE_QUERY", 1, False),
    (op(20004, "DB-Lib error message 20004, severity 9:\nRead from the server failed\nNet-Lib error during "
        "Connection timed out (110)\n"), False, "RIVET_SOURCE_CONNECTION_LOST", 2, True),   # the OS's timeout
    (pymssql.InterfaceError("Connection is closed."), False, "RIVET_SOURCE_CONNECTION_LOST", 2, True),
])
def test_classify(exc, connecting, code, exit_class, transient):
    err = classify(exc, WHERE, connecting=connecting)
    assert (err.code, int(err.exit_class), err.transient) == (code, exit_class, transient)
    assert err.message.startswith(WHERE + ": ") and "\n" not in err.message
    assert "General SQL Server error" not in err.message and "DB-Lib error message" not in err.message


# Cursor.execute re-raises the driver's error as `raise OperationalError, e.args[0]`, which unpacks the (number, text)
# pair into two arguments (measured against a live server: a statement timeout arrived as args == (20047, b'...'));
# pymssql.connect keeps it as one tuple argument. Both shapes must classify alike.
@pytest.mark.parametrize("number, text, code", [
    (20047, "DB-Lib error message 20003, severity 6:\nTDS server connection timed out\nDB-Lib error message 20047, "
     "severity 9:\nDBPROCESS is dead or not enabled\n", "RIVET_SOURCE_TIMEOUT"),
    (18456, "Login failed for user 'rivet'." + GENERAL, "RIVET_SOURCE_AUTH"),
    (208, "Invalid object name 'dbo.nope'." + GENERAL, "RIVET_SOURCE_NO_SUCH_TABLE"),
    (1222, "Lock request time out period exceeded." + GENERAL, "RIVET_SOURCE_BUSY"),
])
def test_classify_both_argument_shapes_of_pymssql(number, text, code):
    for exc in (pymssql.OperationalError((number, text.encode())), pymssql.OperationalError(number, text.encode())):
        err = classify(exc, WHERE)
        assert err.code == code, exc.args
        assert "DB-Lib error message" not in err.message and str(number) != err.message.split(": ", 1)[1]


def test_classify_babelfish_duplicate_column():
    # Babelfish for PostgreSQL reports SQL Server's 8156 with PostgreSQL's text and its own catch-all number
    err = classify(pymssql.OperationalError(33557097, b'column "id" specified more than once' + GENERAL.encode()),
                   WHERE)
    assert err.code == "RIVET_SOURCE_DUPLICATE_COLUMN" and "AS alias" in err.hint


def test_classify_messages_are_readable_and_hints_useful():
    err = classify(op(208, "Invalid object name 'dbo.nope'." + GENERAL), WHERE)
    assert err.message == f"{WHERE}: Invalid object name 'dbo.nope'. (SQL Server error 208)"
    err = classify(op(20009, "DB-Lib error message 20009, severity 9:\nUnable to connect: TDS server is unavailable "
                          "or does not exist (db)\nNet-Lib error during Connection refused (111)\n"), WHERE, True)
    assert err.message == (f"{WHERE}: Unable to connect: TDS server is unavailable or does not exist (db); "
                           "Net-Lib error during Connection refused (111)")
    assert "ORDER BY" in classify(op(1033, "The ORDER BY clause is invalid" + GENERAL), WHERE).hint
    assert "GRANT SELECT" in classify(op(229, "The SELECT permission was denied" + GENERAL), WHERE).hint
    assert "CTE" in classify(op(156, "Incorrect syntax near the keyword 'WITH'." + GENERAL), WHERE).hint


def test_classify_never_shows_a_registered_password():
    register(SECRET)
    err = classify(op(102, f"Incorrect syntax near '{SECRET}'." + GENERAL), WHERE)
    assert SECRET not in err.message and "***" in err.message


# ---- session setup -------------------------------------------------------------------------------------------------

class FakeDriver:
    """pymssql.connect's stand-in: records FreeTDS's (process-wide) query timeout at each statement."""

    def __init__(self):
        self.executed: list[tuple[str, int]] = []
        driver = self

        class Raw:
            query_timeout = 0

        class Cursor:
            description = (("v",),)

            def execute(self, sql):
                driver.executed.append((sql, conn._conn.query_timeout))

            def fetchone(self):
                return ("16.0.1000.6", "Developer Edition (64-bit)", 0)

            def fetchall(self):
                return [(1,)]

        class Conn:
            _conn = Raw()

            def cursor(self):
                return Cursor()

            def close(self):
                pass
        conn = Conn()
        self.conn = conn

    def connect(self, **kw):
        return self.conn


def test_session_setup_is_bounded_by_connect_timeout_statements_by_statement_timeout(monkeypatch):
    # the setup query (version, edition, snapshot state of sys.databases) is part of connecting: a server slow to
    # answer it (a cold session on a busy host took 1.8 s) must not fail a short statement_timeout_s before any
    # statement ran; statements then run under statement_timeout_s
    fake = FakeDriver()
    monkeypatch.setattr("engine.sources.mssql.pymssql.connect", fake.connect)
    src = MssqlSource(SourceConfig("mssql", url(1433)), Tuning(statement_timeout_s=1, connect_timeout_s=12))
    assert src.server_version() == "SQL Server 16.0.1000.6 (Developer Edition (64-bit))"
    [(setup, during_setup)] = fake.executed
    assert "SERVERPROPERTY" in setup and during_setup == 12
    assert fake.conn._conn.query_timeout == 1
    src.scalar("SELECT 1 AS one")
    assert fake.executed[-1] == ("SELECT 1 AS one", 1)
    unbounded = MssqlSource(SourceConfig("mssql", url(1433)), Tuning(statement_timeout_s=0, connect_timeout_s=12))
    unbounded.server_version()
    assert fake.executed[-1][1] == 12 and fake.conn._conn.query_timeout == 0


# ---- real connection attempts to endpoints that are no SQL Server ------------------------------------------------

def url(port: int, password: str = SECRET) -> str:
    return f"mssql://rivet:{password.replace('!', '%21')}@127.0.0.1:{port}/shop"


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture()
def listener():
    """A TCP server on loopback: 'mute' accepts and never answers, 'eof' accepts and hangs up at once."""
    servers = []

    def start(kind: str) -> int:
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        held = []

        def serve():
            while True:
                try:
                    conn, _ = srv.accept()
                except OSError:
                    return
                if kind == "eof":
                    conn.close()
                else:
                    held.append(conn)
        threading.Thread(target=serve, daemon=True).start()
        servers.append((srv, held))
        return srv.getsockname()[1]
    yield start
    for srv, held in servers:
        srv.close()
        for c in held:
            c.close()


def assert_unreachable(err: RivetError) -> None:
    assert err.code == "RIVET_SOURCE_UNREACHABLE" and err.exit_class == ExitClass.TRANSIENT and err.transient
    assert SECRET not in err.message + err.hint and SECRET.replace("!", "%21") not in err.message


def test_closed_port_is_unreachable_fast():
    src = MssqlSource(SourceConfig("mssql", url(closed_port())), FAST)
    t0 = time.monotonic()
    with pytest.raises(RivetError) as e:
        src.server_version()
    assert time.monotonic() - t0 < 5
    assert_unreachable(e.value)


@pytest.mark.parametrize("kind", ["mute", "eof"])
def test_no_sql_server_behind_the_port(listener, kind):
    port = listener(kind)
    src = MssqlSource(SourceConfig("mssql", url(port)), FAST)
    t0 = time.monotonic()
    with pytest.raises(RivetError) as e:
        src.describe(Relation(table="dbo.orders"))
    assert time.monotonic() - t0 < FAST.connect_timeout_s + 3   # the login timeout holds
    assert_unreachable(e.value)
    # a read fails the same way when its iteration starts (each read opens its own connection)
    with pytest.raises(RivetError) as e:
        next(iter(src.read("SELECT 1 AS x", pa.schema([("x", pa.int32())]), 10)))
    assert_unreachable(e.value)


def test_cli_check_and_init_report_an_unreachable_server(tmp_path):
    port = closed_port()
    cfg = write_config(tmp_path / "rivet.toml", f"""
        [source]
        type = "mssql"
        url = "{url(port)}"
        [source.tuning]
        connect_timeout_s = 2

        [[exports]]
        name = "orders"
        table = "dbo.orders"
        destination = {{ type = "local", path = "out" }}
        """)
    proc = rivet("check", "-c", cfg, "--json")
    assert proc.returncode == 2, proc.stderr
    [report] = json.loads(proc.stdout)["exports"]
    assert report["error"]["code"] == "RIVET_SOURCE_UNREACHABLE"
    proc = rivet("init", "--source", url(port), "-o", tmp_path / "new.toml", "--json-errors")
    assert proc.returncode == 2 and "RIVET_SOURCE_UNREACHABLE" in proc.stderr
    assert SECRET not in proc.stderr and SECRET.replace("!", "%21") not in proc.stderr
    assert not (tmp_path / "new.toml").exists()


# ---- URL and TLS options -----------------------------------------------------------------------------------------

def test_parse_url():
    params, tls = parse_url("mssql://DOM%5Crivet:p%40ss@db.example.com:14330/sales%20db?encrypt=true")
    assert params == {"host": "db.example.com", "port": 14330, "user": "DOM\\rivet", "password": "p@ss",
                      "database": "sales db"}
    assert tls == {"encrypt": "true"}
    assert parse_url("mssql://sa@127.0.0.1/")[0]["port"] == 1433
    for bad, code in [("postgresql://u@h/db", "RIVET_CONFIG_BAD_URL"), ("mssql://u@h/db?tds=7.0", "RIVET_CONFIG_BAD_URL"),
                      ("mssql://u@h:99999/db", "RIVET_CONFIG_BAD_URL")]:
        with pytest.raises(RivetError) as e:
            parse_url(bad)
        assert e.value.code == code


@pytest.mark.parametrize("tls, level", [
    ({}, None),
    ({"encrypt": True}, "require"), ({"encrypt": "true"}, "require"), ({"encrypt": "require"}, "require"),
    ({"encrypt": "request"}, "request"),
    ({"encrypt": False}, "off"), ({"encrypt": "off"}, "off"),
    ({"encrypt": True, "trust_server_certificate": True}, "require"),
    ({"encrypt": False, "trust_server_certificate": False}, "off"),   # nothing to check without TLS
])
def test_encryption_levels(tls, level, monkeypatch):
    monkeypatch.delenv("FREETDSCONF", raising=False)
    assert encryption_for(tls) == level


@pytest.mark.parametrize("tls", [{"sslmode": "require"}, {"encrypt": "maybe"}, {"trust_server_certificate": "sure"},
                                 {"encrypt": True, "trust_server_certificate": False}])
def test_tls_refused_with_a_reason(tls, monkeypatch):
    monkeypatch.delenv("FREETDSCONF", raising=False)
    with pytest.raises(RivetError) as e:
        open_source(SourceConfig("mssql", "mssql://sa:x@127.0.0.1:1433/db", tls=tls), FAST)
    assert e.value.code == "RIVET_CONFIG_TLS"
    if "trust_server_certificate" in tls and tls["trust_server_certificate"] is False:
        assert "FREETDSCONF" in e.value.hint and "ca file" in e.value.hint


def test_certificate_checking_needs_a_freetds_conf(monkeypatch, tmp_path):
    conf = tmp_path / "freetds.conf"
    conf.write_text("[global]\n\tca file = /etc/ssl/certs/ca-certificates.crt\n")
    monkeypatch.setenv("FREETDSCONF", str(conf))
    assert encryption_for({"encrypt": True, "trust_server_certificate": False}) == "require"
    # URL options and [source] tls merge; tls wins
    src = MssqlSource(SourceConfig("mssql", "mssql://sa:x@127.0.0.1/db?encrypt=false", tls={"encrypt": "request"}),
                      FAST)
    assert src._encryption == "request"
