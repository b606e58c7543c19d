"""Benchmarks: `fastpath bench NAME`, each against its peer measured in the same run."""
