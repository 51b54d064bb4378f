"""Timed checks of the project's fast paths, each run as `python -m benchmarks.<name>`."""
