"""diffprobe's extract stage: cache diffusion U-Net block features in sharded Zarr stores."""

__version__ = "0.1.0"
