"""Which log files a refresh must look at, with as few system calls as it can.

A source names folders (walked for ``*.jsonl``), files and globs. Listing a few thousand
transcripts in a few hundred folders, and statting each, costs tens of milliseconds every
refresh for files that mostly never change again. Folder listings are therefore cached and
listed again only when a folder may have changed, and in a long-running process a folder
watch names the files to stat; everything is still statted every few minutes, for the
events a network file system never sends.
"""

from __future__ import annotations

import errno
import glob
import itertools
import os
import stat
import time
from collections.abc import Iterable, Iterator, Sequence

from exporter.config import SourceConfig, default_claude_dirs
from exporter.logs.watch import FolderWatcher

__all__ = ["FULL_SCAN_SECONDS", "DirCache", "Finder", "Listed", "discover", "judge_missing", "missing_paths"]

FULL_SCAN_SECONDS = 300.0  # a watched finder still stats every file this often
_GLOB_CHARS = frozenset("*?[")

Listed = tuple[SourceConfig, str, os.stat_result]  # a regular log file, its source and its stat
#: a source's scan: its regular files, the folders that could not be listed ("path: error"), the files
#: listed that could not be statted ("path: error") and its configured paths that do not exist
Scanned = tuple[int, list[str], list[str], list[str]]


class DirCache:
    """Log folder listings, listed again only when a folder may have changed.

    Appending to a file does not change its folder's mtime, so files are still statted
    (by the :class:`Finder`). Without a watcher each folder costs one stat: its mtime says
    whether to list it again. With a usable watcher, a refresh marked ``trusted`` takes every
    watched folder's listing as it is, except the folders :meth:`forget` was told changed.
    """

    TRUST_AFTER_NS = 2_000_000_000  # a folder changed in the last 2 s may change again in the same tick

    def __init__(self, watcher: FolderWatcher | None = None) -> None:
        # folder -> (mtime_ns, (dev, ino), subfolders, files)
        self.entries: dict[str, tuple[int, tuple[int, int], list[str], list[str]]] = {}
        self.watcher = watcher
        self.watched: set[str] = set()
        self.links: set[str] = set()  # files that are symlinks: an event in their folder says nothing of them
        self.trusted = False
        self.renewed: set[str] = set()  # folders that went since the last refresh: stat all their files

    def forget(self, folders: Iterable[str]) -> None:
        for d in folders:
            cached = self.entries.pop(d, None)
            if cached is not None:
                self.links.difference_update(cached[3])  # listed again, its links are found again
            self.watched.discard(d)

    def walk(self, root: str, errors: list[str]) -> Iterator[str]:
        stack = [root]
        seen: set[tuple[int, int]] = set()
        now_ns = time.time_ns()
        watcher = self.watcher if self.watcher is not None and self.watcher.usable else None
        while stack:
            d = stack.pop()
            cached = self.entries.get(d)
            if cached is not None and self.trusted and d in self.watched:
                _, ident, subdirs, files = cached  # no event since it was listed: not even a stat
            else:
                try:
                    st = os.stat(d)
                except OSError as exc:
                    errors.append(f"{d}: {exc.strerror}")
                    continue
                ident = (st.st_dev, st.st_ino)
                if (cached is not None and cached[0] == st.st_mtime_ns and cached[1] == ident
                        and now_ns - st.st_mtime_ns > self.TRUST_AFTER_NS and (watcher is None or d in self.watched)):
                    _, _, subdirs, files = cached
                else:
                    if watcher is not None and watcher.watch(d):  # before listing: nothing slips in between
                        self.watched.add(d)
                    subdirs, files = [], []
                    try:
                        with os.scandir(d) as it:
                            for e in it:
                                # follow_symlinks=False: a symlink loop in a log folder must not recurse forever
                                if e.is_dir(follow_symlinks=False):
                                    subdirs.append(e.path)
                                elif e.name.endswith(".jsonl"):
                                    files.append(e.path)
                                    if e.is_symlink():
                                        self.links.add(e.path)
                    except OSError as exc:
                        errors.append(f"{d}: {exc.strerror}")
                        continue
                    self.entries[d] = (st.st_mtime_ns, ident, subdirs, files)
            if ident in seen:  # a loop through a bind mount or the root itself linked below
                continue
            seen.add(ident)
            yield from files
            stack.extend(subdirs)


def _glob_root(path: str) -> str:
    """The folder a glob looks in: its leading components without a glob character."""
    parts = path.split(os.sep)
    fixed = list(itertools.takewhile(lambda part: not _GLOB_CHARS.intersection(part), parts))
    return os.sep.join(fixed) or (os.sep if path.startswith(os.sep) else ".")


def _exists(raw: str) -> bool:
    """Whether a configured path is there: a file or folder (through links), or a glob's folder."""
    path = os.path.normpath(os.path.expanduser(raw))
    if _GLOB_CHARS.intersection(path):
        return os.path.isdir(_glob_root(path))
    return os.path.exists(path)


def _default_folders() -> frozenset[str]:
    """Claude Code's folders (the usual two, and ``$CLAUDE_CONFIG_DIR``'s): alternatives, of which a
    machine usually has one, so one of them missing is not worth a word."""
    dirs = {*default_claude_dirs(), *default_claude_dirs({})}
    return frozenset(os.path.normpath(os.path.expanduser(d)) for d in dirs)


def judge_missing(source: SourceConfig, missing: Sequence[str]) -> tuple[list[str], bool]:
    """Of a source's paths that do not exist: (those to say, whether the source is down for them).

    A path missing is said (a typo, a folder not made yet), except Claude Code's own folders; the
    source is down when none of its paths exists and one of them is not such a folder.
    """
    defaults = _default_folders() if missing else frozenset()
    said = [p for p in missing if os.path.normpath(os.path.expanduser(p)) not in defaults]
    return said, bool(said) and len(set(missing)) == len(set(source.paths))


def missing_paths(source: SourceConfig) -> tuple[list[str], bool]:
    """:func:`judge_missing` of the source's paths as the file system is now."""
    return judge_missing(source, [raw for raw in source.paths if not _exists(raw)])


def discover(source: SourceConfig, cache: DirCache | None = None) -> tuple[list[str], list[str], list[str]]:
    """(files, errors, missing) for a source's paths: folders are walked for ``*.jsonl``, globs
    expanded; ``missing`` are the paths as configured that do not exist (a glob: its folder)."""
    cache = cache or DirCache()
    found: set[str] = set()
    errors: list[str] = []
    missing: list[str] = []
    for raw in source.paths:
        path = os.path.normpath(os.path.expanduser(raw))  # one spelling per folder: the watch is keyed by it
        if _GLOB_CHARS.intersection(path):
            matches = glob.glob(path, recursive=True)
            if not matches and not os.path.isdir(_glob_root(path)):
                missing.append(raw)
            for p in matches:
                if os.path.isdir(p):
                    found.update(cache.walk(p, errors))
                else:
                    found.add(p)
        elif os.path.isdir(path):
            found.update(cache.walk(path, errors))
        elif os.path.exists(path):
            found.add(path)
        else:
            missing.append(raw)
    return sorted(found), errors, missing


class Finder:
    """The regular log files of each source, statted; with ``watch``, statting only what changed.

    Without a watch (a one-shot ``report``) every call lists what changed and stats every
    file. With one (``serve``), a file is statted again only when an event named it, its
    folder is not watched, it is a symlink, or its folder went and came back; every
    ``full_scan_seconds``, and whenever events may have been lost, everything is.
    """

    def __init__(self, *, watch: bool = False, full_scan_seconds: float = FULL_SCAN_SECONDS) -> None:
        self.watcher = FolderWatcher.create() if watch else None
        self.full_scan_seconds = full_scan_seconds
        self._full_scan_at = 0.0
        self._dircache = DirCache(self.watcher)
        self._stat_cache: dict[str, os.stat_result] = {}

    def scan(self, sources: Sequence[SourceConfig]) -> tuple[list[Listed], dict[str, Scanned], int]:
        """(the regular files in a stable order, per source what :data:`Scanned` says, files statted)."""
        changed = self._changed_files()  # None: stat every file
        cache, stat_cache = self._dircache, self._stat_cache
        watched, links, renewed, sep = cache.watched, cache.links, cache.renewed, os.sep
        fresh: dict[str, os.stat_result] = {}
        listed: list[Listed] = []
        per_source: dict[str, Scanned] = {}
        statted = 0
        for source in sources:
            paths, errors, missing = discover(source, cache)
            unreadable: list[str] = []  # files listed that cannot be statted: the source is still up
            regular = 0
            for p in paths:
                st = None
                if changed is not None and p not in changed and p[:p.rfind(sep)] in watched and p not in links \
                        and (not renewed or not any(p.startswith(g) for g in renewed)):
                    st = stat_cache.get(p)  # its folder watched, and no event named it since its last stat
                if st is None:
                    statted += 1
                    try:
                        st = os.stat(p)
                    except OSError as exc:  # a dangling link or a loop of links, a file gone since the listing
                        if exc.errno != errno.ENOENT or os.path.islink(p):
                            unreadable.append(f"{p}: {exc.strerror}")
                        continue
                if not stat.S_ISREG(st.st_mode):  # not a FIFO or device that happens to end in .jsonl
                    continue
                fresh[p] = st
                regular += 1
                listed.append((source, p, st))
            per_source[source.name] = (regular, errors, unreadable, missing)
        self._stat_cache = fresh
        return listed, per_source, statted

    def _changed_files(self) -> set[str] | None:
        """The files a watched scan must stat; None when this scan stats everything."""
        w = self.watcher
        dircache = self._dircache
        if w is None or not w.usable:
            dircache.trusted = False
            return None
        changes = w.changes()
        mono = time.monotonic()
        if changes is None or mono >= self._full_scan_at or not w.usable:
            # events may have been lost (or this is the first scan): stat everything, and
            # again every few minutes for files no event reaches (network file systems)
            self._full_scan_at = mono + self.full_scan_seconds
            dircache.trusted = False
            dircache.renewed = set()
            return None
        dircache.forget(changes.folders | changes.gone)
        dircache.renewed = {os.path.join(g, "") for g in changes.gone}  # with a trailing separator
        dircache.trusted = True
        return changes.files

    def close(self) -> None:
        """Let go of the folder watches (a scan after this stats everything)."""
        if self.watcher is not None:
            self.watcher.close()
