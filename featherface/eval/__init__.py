"""Evaluation: the official WIDER FACE protocol in vectorised numpy."""
