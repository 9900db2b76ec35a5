"""Exceptions shared by several modules (kept here so that no import cycle is needed to raise them)."""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """A parameter file or override that does not match the schema."""
