"""The HTTP service Weaviate uses as its multi2vec-clip and reranker-transformers container."""

from __future__ import annotations

from cir_module.service.app import create_app

__all__ = ["create_app"]
