"""seqcast's inference service: FastAPI on ONNX Runtime, state in and out."""

__version__ = "0.1.0"

__all__ = ["__version__"]
