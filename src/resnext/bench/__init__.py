"""Benchmarks: throughput of our engine and loaders, each side by side with a reference."""
