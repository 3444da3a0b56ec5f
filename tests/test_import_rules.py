"""The import rules of pyproject.toml's [tool.importlinter] contracts, checked by import-linter:
only the CLI imports integration/ and onnx_export/; service/ and models/ never import data/;
vlm/ (what the VLM roles share) never imports rerank/ or enrich/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    run = subprocess.run(
        [str(lint), "--no-cache", "--no-logo"], cwd=ROOT, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Contracts: 3 kept, 0 broken." in run.stdout


def test_every_lazy_export_resolves():
    # A lazy export points at a module by name; a moved function leaves a dead name that only
    # fails when someone first uses it.
    import cir_module
    import integration

    for package in (cir_module, integration):
        for name in package.__all__:
            assert getattr(package, name) is not None, (package.__name__, name)
