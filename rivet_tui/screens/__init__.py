"""Screens of the Rivet TUI."""
