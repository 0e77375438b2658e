"""Rivet's engine: config, sources, formats, destinations, state and the runner.

Nothing here imports the terminal UI (textual / rich); a test enforces it.
"""
