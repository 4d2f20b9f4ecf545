"""Benchmarks against the local stack."""
