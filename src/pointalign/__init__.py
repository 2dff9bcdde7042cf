"""pointalign: 3D vision-language models with PointAlign feature-level alignment."""

__version__ = "0.1.0"
