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
