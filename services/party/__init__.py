"""The party service."""
