"""Training half of seqcast: data, models, fitting, evaluation and ONNX export (PyTorch only)."""
