"""The DuckDB scanner extensions: installed once into a private directory, loaded without re-hashing them only while
nobody but this user can change that directory (engine/duck.py)."""
from __future__ import annotations


import pytest

from engine import duck


@pytest.fixture
def ext_dir(tmp_path, monkeypatch):
    """A fresh extension directory for this test, as if the process had not installed the scanners yet."""
    d = tmp_path / "duckdb_extensions"
    monkeypatch.setattr(duck, "_candidate_dirs", lambda: [d])
    monkeypatch.setattr(duck, "_ext_dir", None)
    monkeypatch.setattr(duck, "_ext_dir_private", False)
    return d


def loaded_scanner(con) -> bool:
    con.execute("LOAD postgres_scanner")
    return con.execute("SELECT loaded FROM duckdb_extensions() WHERE extension_name = 'postgres_scanner'").fetchone()[0]


def unsigned_allowed(con) -> bool:
    return con.execute("SELECT current_setting('allow_unsigned_extensions')").fetchone()[0]


def test_a_directory_only_we_can_change_skips_the_signature_hash(ext_dir):
    con = duck.connect(threads=1)
    assert unsigned_allowed(con) is True
    assert loaded_scanner(con)


def test_a_directory_others_can_write_keeps_the_signature_check(ext_dir):
    duck._prepare_extension_dir()
    platform_dir = next(ext_dir.glob(duck._PLATFORM_SUBDIR_GLOB.rstrip("/")))
    platform_dir.chmod(0o777)   # another user could swap the scanner file for their own
    duck._ext_dir = None
    con = duck.connect(threads=1)
    assert duck._ext_dir_private is False
    assert unsigned_allowed(con) is False
    assert loaded_scanner(con)   # still loads: the wheel's file is signed
