"""Helpers for tests and benchmarks: hand-built ramps, laziness checks, the official pipeline."""
