"""Benchmarks against the baselines a user would pick (issue 7). `python -m bench [--quick]`."""
