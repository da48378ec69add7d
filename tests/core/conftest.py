"""Fixtures for the core tests live in core_helpers.py (a uniquely named module, importable from the tests:
`from conftest import` is ambiguous across test folders); importing them here makes pytest see them."""

from core_helpers import *  # noqa: F401,F403
