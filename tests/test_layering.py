"""engine/ must never import the terminal UI (docs/architecture.md): checked in a clean subprocess."""
import subprocess
import sys

from tests.helpers import ROOT


def test_engine_imports_neither_textual_nor_rich():
    code = ("import sys, pkgutil, importlib, engine\n"
            "for m in pkgutil.walk_packages(engine.__path__, 'engine.'):\n"
            "    importlib.import_module(m.name)\n"
            "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('textual', 'rich'))\n"
            "print(','.join(bad)); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, f"engine imported: {proc.stdout} {proc.stderr}"


def test_a_postgres_to_parquet_run_does_not_import_pyarrow_compute(pg, tmp_path):
    """Importing pyarrow.compute builds ~1,000 wrappers (~60 ms of every process start); the Parquet path and the
    PostgreSQL checks call what they need through call_function (engine/formats.py). A column of every kind those
    checks look at: numeric (NaN guard), timestamp/date/time (range checks), text (dictionary choice, shape drift)."""
    pg.sql("CREATE TABLE t (id int PRIMARY KEY, amount numeric(10,2), at timestamptz, day date, tod time, note text)")
    pg.sql("INSERT INTO t SELECT g, g * 1.5, now(), current_date, '12:00', 'n' || g FROM generate_series(1, 50) g")
    cfg = tmp_path / "rivet.toml"
    cfg.write_text(f'[source]\ntype = "postgres"\nurl = "{pg.url}"\n\n[[exports]]\nname = "t"\ntable = "t"\n'
                   'mode = "full"\nformat = "parquet"\ndestination = { type = "local", path = "out" }\n')
    code = ("import sys\nfrom rivet_tui.cli import main\n"
            f"try:\n    main(['run', '-c', {str(cfg)!r}, '--no-tui', '--json'])\nexcept SystemExit as e:\n"
            "    assert e.code in (0, None), e.code\n"
            "print('pyarrow.compute' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "False"
    assert list((tmp_path / "out").glob("*.parquet"))
