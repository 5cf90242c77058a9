"""Tests of the nested test host (a package, so its conftest does not shadow tests/conftest.py)."""
