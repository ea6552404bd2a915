"""Packaged recipes (YAML)."""
