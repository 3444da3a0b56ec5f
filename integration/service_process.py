"""The inference service as a real child process (``cir serve``), for Weaviate to call."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from integration.processes import ManagedProcess, free_port

__all__ = ["ServiceProcess"]


class ServiceProcess(ManagedProcess):
    """``cir serve`` on 127.0.0.1 and a free port; ready once the model is loaded."""

    def __init__(
        self,
        checkpoint: str | Path,
        *,
        env: dict[str, str] | None = None,
        startup_timeout: float = 300.0,
        port: int | None = None,
    ) -> None:
        super().__init__()
        self.checkpoint = str(checkpoint)
        self._port_given = port is not None
        self.port = port or free_port()
        self.extra_env = env or {}
        self.startup_timeout = startup_timeout
        self.log_path = Path(tempfile.mkstemp(prefix="cir-service-", suffix=".log")[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spawn(self) -> ServiceProcess:
        """Start ``cir serve`` (:meth:`start` also waits until its model is loaded)."""
        env = {
            **os.environ,
            "CIR_CHECKPOINT": self.checkpoint,
            "CIR_HOST": "127.0.0.1",
            "CIR_PORT": str(self.port),
            **self.extra_env,
        }
        self._spawn([sys.executable, "-m", "cir_module.cli", "serve"], env)
        return self

    def choose_new_ports(self) -> bool:
        """A new free port, unless the caller gave this one (a restart on the same port)."""
        if self._port_given:
            return False
        self.port = free_port()
        return True

    def ports(self) -> dict[str, int]:
        return {"http": self.port}

    def wait_until_ready(self) -> ServiceProcess:
        """Wait until ``/.well-known/ready`` answers 2xx."""
        self._wait_ready(f"{self.url}/.well-known/ready", "cir service", self.startup_timeout)
        return self
