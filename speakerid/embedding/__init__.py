"""The pipeline from a recording to one unit vector: ``embedder`` (the interface every
backend implements), ``pipeline`` (opening an embedder for a model and backend),
``backends`` (torch and onnx) and ``bulk`` (embedding many files over shards).
"""
