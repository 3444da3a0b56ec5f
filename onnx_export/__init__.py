"""ONNX export of a checkpoint's encoders (``cir export``), validated against torch."""

from __future__ import annotations

from onnx_export.export import VARIANTS, export_checkpoint
from onnx_export.validate import ParityError

__all__ = ["VARIANTS", "ParityError", "export_checkpoint"]
