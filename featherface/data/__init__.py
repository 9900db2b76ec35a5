"""Data: WIDER FACE labels, sources, download and verification."""
