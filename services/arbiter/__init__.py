"""The arbiter service."""
