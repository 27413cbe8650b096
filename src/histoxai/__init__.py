"""histoxai: explainable deep learning on histology patches coregistered with diffusion MRI."""

__version__ = "0.1.0"
