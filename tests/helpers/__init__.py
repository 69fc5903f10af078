"""Shared test helpers: one module per area, imported by the test files."""
