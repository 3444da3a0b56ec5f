"""The import rules of pyproject.toml's [tool.importlinter] contracts, checked by import-linter:
only the CLI imports integration/ and onnx_export/; the product never imports research/; the
package's rooms are layers (no circles, nothing imports upward); service/ never imports
training, evaluation, the synthetic benchmark or research; service/ and models/ never import
data/; vlm/ (what the VLM roles share) never imports rerank/ or enrich/; the rerankers' base
class and registry import no reranker kind."""

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
    assert "Contracts: 7 kept, 0 broken." in run.stdout


def test_research_is_out_of_the_installed_package_and_its_verbs_out_of_cir():
    import tomllib

    from cir_module.cli import build_parser

    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "research" not in str(packages)
    verbs = build_parser()._subparsers._group_actions[0].choices
    assert "probe" not in verbs["vlm"]._subparsers._group_actions[0].choices
    assert "distil" not in verbs["rar"]._subparsers._group_actions[0].choices


def test_every_lazy_export_resolves():
    # A lazy export points at a module by name; a moved function leaves a dead name that only
    # fails when someone first uses it.
    import cir_module
    import cir_module.rerank
    import cir_module.vlm_training
    import integration

    for package in (cir_module, cir_module.rerank, cir_module.vlm_training, integration):
        for name in package.__all__:
            assert getattr(package, name) is not None, (package.__name__, name)
