"""Benchmarks of stemd's separation engine against the demucs CLI (see docs/benchmarks.md)."""
