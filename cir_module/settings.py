"""Service settings: one pydantic-settings object, read from ``CIR_*`` environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from cir_module.checkpoints import shipped_checkpoint

__all__ = ["ServiceSettings"]


class ServiceSettings(BaseSettings):
    """Everything the inference service can be told. Tests build one directly."""

    model_config = SettingsConfigDict(env_prefix="CIR_", extra="ignore")

    checkpoint: str = Field(
        default_factory=lambda: str(shipped_checkpoint()),
        description="Model to serve: a checkpoint folder written by `cir` (or a plain CLIP / "
        "SigLIP checkpoint: hub id or folder). Default: the shipped shapes-minilm model.",
    )
    device: str = Field("cpu", description="torch device for the model, e.g. cpu or cuda.")
    host: str = Field("127.0.0.1", description="Address `cir serve` binds.")
    port: int = Field(8080, ge=1, le=65535, description="Port `cir serve` binds.")
    torch_threads: int | None = Field(None, ge=1, description="torch intra-op threads.")
    max_batch_size: int = Field(32, ge=1, description="Most items in one model forward.")
    embedding_cache_size: int = Field(
        8192, ge=0, description="Candidate image embeddings kept for /rerank (by content hash)."
    )
    log_level: str = Field("info", description="Python log level name.")
