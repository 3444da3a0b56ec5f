"""The repository itself: no file carries an unresolved merge."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# git writes these at the start of a line; seven characters, then a space or the line's end
# ("=======" alone is also a Markdown/RST heading underline, so it is checked only between the
# two others).
_OURS = re.compile(rb"^<{7}( |$)", re.M)
_THEIRS = re.compile(rb"^>{7}( |$)", re.M)


def _tracked_files() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    return [ROOT / name for name in out.decode().split("\0") if name]


def conflict_markers(data: bytes) -> list[int]:
    """1-based line numbers of merge-conflict markers in ``data``."""
    lines = []
    for pattern in (_OURS, _THEIRS):
        lines += [data.count(b"\n", 0, m.start()) + 1 for m in pattern.finditer(data)]
    return sorted(lines)


def test_the_marker_finder_sees_a_conflict_and_nothing_else():
    conflicted = b"a\n<<<<<<< HEAD\nb\n=======\nc\n>>>>>>> branch\nd\n"
    assert conflict_markers(conflicted) == [2, 6]
    assert conflict_markers(b"Title\n=======\n<<<<<<<<\n> quoted\n") == []


def test_no_tracked_file_carries_a_merge_conflict():
    found = {}
    for path in _tracked_files():
        if path.is_file():
            lines = conflict_markers(path.read_bytes())
            if lines:
                found[str(path.relative_to(ROOT))] = lines
    assert not found, f"unresolved merge-conflict markers (file: lines): {found}"


README_MAX_LINES = 250
# [text](target): a Markdown link or image; the target up to a space, ")" or "#".
_LINK = re.compile(r"\]\(([^)\s#]+)(#[^)\s]*)?\)")


def test_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines; depth belongs in docs/ (at most {README_MAX_LINES})"
    )


def test_links_in_readme_and_docs_point_at_files_that_exist():
    broken = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target, _ in _LINK.findall(page.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, f"links to missing files: {broken}"
