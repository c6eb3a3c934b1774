"""Streaming soft clustering of token activations that do not fit in memory: activation files,
the vMF mixture, the streaming passes, per-cluster statistics and the numba kernels (``kernels``)."""
