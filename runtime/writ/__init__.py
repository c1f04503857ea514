"""Writ: run agent tools in hardened containers that cannot exceed their user's grant."""

__version__ = "0.1.0"
