"""Benchmarks run by `keras-bn bench NAME`; each module has `main(argv) -> int`."""
