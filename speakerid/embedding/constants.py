"""The backends and precisions an embedder may run with, and the environment variables that
choose them: names only (stdlib only), so that the CLI's options and ``cli.early`` read them
without importing numpy or a backend."""

from __future__ import annotations

from typing import Literal, get_args

Backend = Literal["torch", "onnx"]
BACKENDS: tuple[str, ...] = get_args(Backend)
BACKEND_ENV = "SPEAKERID_BACKEND"  # environment variable choosing the backend
PRECISION_ENV = "SPEAKERID_PRECISION"  # environment variable choosing --precision
Precision = Literal["auto", "fp32", "bf16"]  # the torch backend's arithmetic
PRECISIONS: tuple[str, ...] = get_args(Precision)

__all__ = ["BACKENDS", "BACKEND_ENV", "PRECISIONS", "PRECISION_ENV", "Backend", "Precision"]
