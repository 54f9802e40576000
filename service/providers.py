"""Choosing ONNX Runtime execution providers from the `providers` setting."""

from __future__ import annotations

import onnxruntime as ort

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


class ProviderError(RuntimeError):
    """The configured providers cannot be used; the service must not start."""


def resolve_providers(setting: str) -> list[str]:
    """Providers to hand to every InferenceSession, in priority order.

    ``auto`` takes CUDA when this onnxruntime build offers it, with CPU behind it for
    operators CUDA lacks; an explicit list is honoured as given, and every name in it
    must be one that this onnxruntime can use.
    """
    available = list(ort.get_available_providers())
    if setting == "auto":
        return [CUDA, CPU] if CUDA in available else [CPU]
    names = [n.strip() for n in setting.split(",")]
    known = set(ort.get_all_providers()) | set(available)
    for name in names:
        if name not in known:
            raise ProviderError(
                f"unknown execution provider {name!r} in SEQCAST_PROVIDERS; "
                f"this onnxruntime offers {available}"
            )
        if name not in available:
            raise ProviderError(
                f"execution provider {name!r} in SEQCAST_PROVIDERS is not available in this "
                f"onnxruntime build; it offers {available}"
            )
    return names
