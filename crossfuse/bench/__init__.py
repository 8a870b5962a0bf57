"""Benchmarks behind ``crossfuse bench``: fusion methods tuned alike, encoder throughput."""
