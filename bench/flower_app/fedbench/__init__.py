"""Flower side of fedsuite's horizontal benchmark (runs inside bench/.flower-venv only)."""
