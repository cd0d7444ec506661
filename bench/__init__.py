"""Benchmarks of the streaming iDQ pipeline (`make bench`, `make bench-quick`)."""
