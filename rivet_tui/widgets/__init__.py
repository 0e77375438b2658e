"""Widgets of the Rivet TUI."""
