"""Tests of the CLI, its output helpers and the blocking HTTP client."""
