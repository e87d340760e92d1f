"""Test helpers: the one naive float64 reference (``reference``), model builders
(``models``, ``rank``) and the real-server fixtures (``server``)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
"""The repository root."""
