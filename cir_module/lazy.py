"""Package faces whose heavy names load on first use.

A package lists its public names and the module each comes from; ``import package`` then
costs nothing, and torch (or the Weaviate client) is imported only when a name that needs it
is first looked up. This is how ``import cir_module`` for :func:`compose_query` and the
service serving an ONNX export stay free of torch.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["EXTRA_OF", "lazy_exports", "missing_extra"]

# Optional top-level modules and the extra of ours that installs each.
EXTRA_OF = {
    "torch": "torch",
    "onnx": "export",
    "onnxruntime": "cpu",
    "selenium": "dev",
    "httptools": "http",
    "uvloop": "http",
}


def missing_extra(exc: ModuleNotFoundError, what: str) -> ImportError:
    """``exc`` restated for a user: what needed the missing module, and the extra that
    installs it when one of ours does."""
    root = (exc.name or "").split(".")[0]
    if root in EXTRA_OF:
        return ImportError(f"{what} needs {root}: pip install 'weaviate-cir[{EXTRA_OF[root]}]'")
    return ImportError(f"{what} needs {root}, which is not installed")


def lazy_exports(
    package: str, origins: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: each name in ``origins`` is imported
    from its module (``origins[name]``) when first looked up, then kept on the package."""

    def __getattr__(name: str) -> Any:
        origin = origins.get(name)
        if origin is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        try:
            value = getattr(importlib.import_module(origin), name)
        except ModuleNotFoundError as exc:
            raise missing_extra(exc, f"{package}.{name}") from exc
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(origins))

    return __getattr__, __dir__
