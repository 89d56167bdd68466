"""Backends that run an encoder behind ``BaseEmbedder``: ``torch`` (a checkpoint on CPU or
GPU) and ``onnx`` (an exported graph on onnxruntime with the numpy front-end, no torch).
Neither imports the other; ``embedding.pipeline.open_embedder`` picks one."""
