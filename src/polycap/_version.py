"""The one place polycap's version is defined (pyproject reads it dynamically)."""

__version__ = "0.1.0"
