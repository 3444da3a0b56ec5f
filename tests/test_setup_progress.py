"""Long set-up steps say how far they got: ``go install`` (the Weaviate build takes minutes)
is run with ``-v`` and its progress logged while it runs; a failed build says why."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest

from integration.weaviate_server import go_install

GO = shutil.which("go")
pytestmark = pytest.mark.skipif(GO is None, reason="Go is needed (make weaviate needs it too)")


def _module(root: Path, source: str) -> Path:
    root.mkdir()
    (root / "go.mod").write_text("module example.com/hello\n\ngo 1.22\n")
    (root / "main.go").write_text(source)
    return root


def test_go_install_logs_progress_while_it_builds(tmp_path, caplog):
    module = _module(tmp_path / "hello", 'package main\n\nfunc main() { println("hi") }\n')
    env = {**os.environ, "GOBIN": str(tmp_path / "bin"), "CGO_ENABLED": "0", "GOFLAGS": "-a"}
    with caplog.at_level(logging.INFO, logger="integration.weaviate_server"):
        # -a rebuilds the standard library too: long enough for several progress lines.
        go_install(GO, ".", env, every_s=0.2, cwd=module)
    assert (tmp_path / "bin" / "hello").is_file()
    progress = [r.getMessage() for r in caplog.records if "packages compiled" in r.getMessage()]
    assert progress, caplog.text
    counts = [int(m.split(": ")[1].split()[0]) for m in progress]
    assert counts == sorted(counts) and counts[-1] > 0


def test_a_failed_build_says_what_the_compiler_said(tmp_path):
    module = _module(tmp_path / "broken", "package main\n\nfunc main() { undefinedThing() }\n")
    env = {**os.environ, "GOBIN": str(tmp_path / "bin"), "CGO_ENABLED": "0"}
    with pytest.raises(RuntimeError, match="undefined: undefinedThing"):
        go_install(GO, ".", env, cwd=module)
