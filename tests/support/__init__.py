"""Shared helpers for Deputy's test suites."""
