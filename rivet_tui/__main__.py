"""`python -m rivet_tui ...` is `rivet ...` (e.g. `python -X importtime -m rivet_tui --version`)."""
from rivet_tui.warm import entry

entry()
