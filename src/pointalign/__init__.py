"""pointalign: 3D vision-language models with PointAlign feature-level alignment."""

__version__ = "0.1.0"
__all__ = ["PointAlignPipeline", "build_model", "load_model", "preset"]


def __getattr__(name: str):  # heavy imports (torch, transformers) only when asked for
    if name == "PointAlignPipeline":
        from pointalign.pipeline import PointAlignPipeline

        return PointAlignPipeline
    if name == "build_model":
        from pointalign.models.builders import build_model

        return build_model
    if name == "load_model":
        from pointalign.checkpoint import load_model

        return load_model
    if name == "preset":
        from pointalign.config import preset

        return preset
    raise AttributeError(f"module 'pointalign' has no attribute {name!r}")
