"""Helpers with no detector knowledge: atomic file writes, hashing, progress, provenance."""
