"""What ``claude_exporter_build_info`` says about the running build: its version, the source
revision it was built from and the Python that runs it.

The revision is looked up once, when the exporter builds its collector, never at import and
never by running a command: ``CLAUDE_BUDGET_EXPORTER_REVISION`` when set (an image built with
``--build-arg REVISION=...``), else the commit a source checkout's ``.git`` names (a few small
file reads), else ``unknown`` (an installed wheel).
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

__all__ = ["REVISION_ENV", "python_version", "revision"]

REVISION_ENV = "CLAUDE_BUDGET_EXPORTER_REVISION"
UNKNOWN = "unknown"
_SHA = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")  # SHA-1 or SHA-256 object names
_GIVEN = re.compile(r"[0-9A-Za-z._+-]{1,64}")  # a revision given from outside: a label value, kept short
_SHORT = 12
_MAX_READ = 1 << 20  # packed-refs of a large repository; anything longer is not read


def python_version() -> str:
    return platform.python_version()


def revision(package_dir: Path | None = None) -> str:
    """The build's revision: 12 hex digits of a commit, a given tag-like string, or ``unknown``."""
    given = os.environ.get(REVISION_ENV, "").strip()
    if given:
        return given if _GIVEN.fullmatch(given) else UNKNOWN
    root = (package_dir or Path(__file__).resolve().parent).parent
    try:
        sha = _git_head(root / ".git")
    except (OSError, UnicodeDecodeError, ValueError):
        return UNKNOWN
    return sha[:_SHORT] if sha else UNKNOWN


def _read(path: Path) -> str:
    with open(path, "rb") as f:
        return f.read(_MAX_READ).decode("utf-8")


def _git_head(git: Path) -> str | None:
    """The commit HEAD names, read from the files of a checkout (a worktree's ``.git`` file too)."""
    if git.is_file():  # a worktree or submodule: "gitdir: <path>"
        line = _read(git).strip()
        if not line.startswith("gitdir:"):
            return None
        git = (git.parent / line.removeprefix("gitdir:").strip()).resolve()
    if not git.is_dir():
        return None
    head = _read(git / "HEAD").strip()
    if _SHA.fullmatch(head):
        return head  # detached
    if not head.startswith("ref: refs/"):
        return None
    ref = head.removeprefix("ref: ")
    if ".." in ref.split("/"):
        return None
    common = git
    if (git / "commondir").is_file():  # a worktree keeps its branches in the main repository
        common = (git / _read(git / "commondir").strip()).resolve()
    for base in dict.fromkeys((git, common)):
        loose = base / ref
        if loose.is_file():
            value = _read(loose).strip()
            return value if _SHA.fullmatch(value) else None
    for base in dict.fromkeys((git, common)):
        packed = base / "packed-refs"
        if packed.is_file():
            for line in _read(packed).splitlines():
                sha, _, name = line.partition(" ")
                if name == ref and _SHA.fullmatch(sha):
                    return sha
    return None
