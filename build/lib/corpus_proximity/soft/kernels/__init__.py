"""numba kernels of the soft clustering (hot code): see README.md in this folder before changing them."""
