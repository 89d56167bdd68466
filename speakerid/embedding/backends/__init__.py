"""Backends that run an encoder: ``onnx`` (onnxruntime and the numpy front-end, no torch)."""
