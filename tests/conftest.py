"""Test-wide plugins: the store backends (tests/pg_harness.py)."""

pytest_plugins = ["tests.pg_harness"]
