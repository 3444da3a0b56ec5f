"""weaviate-cir: composed image retrieval inside stock Weaviate.

Public API: build composed queries for Weaviate's ``nearText`` / ``rerank`` (``compose_query``),
create and load models (``create_model``, ``load_model``), and the service (``create_app``).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from cir_module.errors import InputError
    from cir_module.models import CIRConfig, CIRModel, create_model, list_models, load_model
    from cir_module.query import (
        ComposedQuery,
        compose_query,
        parse_composed_query,
        read_composed_query,
    )

# The public names and the module each comes from, imported on first use: importing a
# submodule (``cir --help`` imports ``cir_module.cli``) must not load torch with the models.
_LAZY = {
    "InputError": "cir_module.errors",
    "CIRConfig": "cir_module.models",
    "CIRModel": "cir_module.models",
    "create_model": "cir_module.models",
    "list_models": "cir_module.models",
    "load_model": "cir_module.models",
    "ComposedQuery": "cir_module.query",
    "compose_query": "cir_module.query",
    "parse_composed_query": "cir_module.query",
    "read_composed_query": "cir_module.query",
}

__all__ = [
    "CIRConfig",
    "CIRModel",
    "ComposedQuery",
    "InputError",
    "__version__",
    "compose_query",
    "create_model",
    "list_models",
    "load_model",
    "parse_composed_query",
    "read_composed_query",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value  # once imported, a plain attribute
        return value
    raise AttributeError(f"module 'cir_module' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
