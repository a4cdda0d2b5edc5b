"""Thin entry points: one module per container step (`python -m jobs.<step>`), plus `fmnist`."""
