"""Performance suite for bioplausible: FLOP floors, timings against peers, scaling and memory.

Run ``python -m benchmarks.run`` from the repository root (see docs/benchmarks.md).
"""
