"""Benchmarks of the studio's model manager: `python -m bench`."""
