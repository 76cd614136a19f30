"""Which log folders and files changed since the last refresh, from Linux's inotify.

Without it every refresh stats every log file and folder: over a few thousand transcripts
that is 20-30 ms of system calls, each refresh, for files that mostly never change again.
With it a refresh stats only what an event named. Events can be lost (a full queue, a
network file system that sends none), so the ingestor still scans everything every few
minutes; a folder that cannot be watched, or any system without inotify, means a full scan
on every refresh, as before.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import struct
from dataclasses import dataclass, field

from exporter.logsetup import get_logger

__all__ = ["Changes", "FolderWatcher"]

log = get_logger()

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

_CONTENT = IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE  # a file grew, was cut short or rewritten
_ENTRIES = IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE  # a name came or went
_SELF = IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED  # the folder itself went
# a root folder that is a symlink is watched at its target, where the events happen
_MASK = _CONTENT | _ENTRIES | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of NUL-padded name


@dataclass
class Changes:
    """What changed: folders whose entries must be listed again, folders that went (deleted
    or moved: what is at that path later is another folder, whose files must all be statted)
    and files to stat again."""

    folders: set[str] = field(default_factory=set)
    gone: set[str] = field(default_factory=set)
    files: set[str] = field(default_factory=set)


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        init, add = libc.inotify_init1, libc.inotify_add_watch
    except (OSError, AttributeError):  # not Linux, or a libc without inotify
        return None
    init.argtypes, init.restype = [ctypes.c_int], ctypes.c_int
    add.argtypes, add.restype = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32], ctypes.c_int
    libc.inotify_rm_watch.argtypes, libc.inotify_rm_watch.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return libc


class FolderWatcher:
    """inotify watches on folders; :meth:`changes` drains the events since the last call.

    ``usable`` turns False for good once a folder cannot be watched (the per-user watch
    limit, a permission) or the queue overflowed: the caller then scans everything.
    """

    def __init__(self, libc: ctypes.CDLL) -> None:
        self._libc = libc
        fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
        self.fd = fd
        self.usable = True
        # watch descriptor -> the paths it was asked for: a watch is per inode, so one folder
        # reached by two paths (a symlinked config folder) shares one descriptor
        self._folders: dict[int, set[str]] = {}
        self._overflowed = False

    @classmethod
    def create(cls) -> FolderWatcher | None:
        """A watcher, or None where inotify is missing or refused."""
        libc = _libc()
        if libc is None:
            return None
        try:
            return cls(libc)
        except OSError as exc:
            log.info("log_watch_unavailable", error=exc.strerror, consequence="every refresh stats every log file")
            return None

    def watch(self, folder: str) -> bool:
        """Watch a folder (again: a watch is per inode, so a folder moved keeps its descriptor)."""
        if not self.usable:
            return False
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(folder), _MASK)
        if wd < 0:
            err = ctypes.get_errno()
            if err in (errno.ENOENT, errno.ENOTDIR):
                return False  # gone since it was listed: the next listing says so
            if err == errno.EACCES:
                # a folder this process may not read: its listing fails too and says so, with its
                # path; it is statted each refresh, and every other folder stays watched
                return False
            log.warning("log_watch_unavailable", folder=folder, error=os.strerror(err),
                        consequence="every refresh stats every log file",
                        hint="raise fs.inotify.max_user_watches" if err == errno.ENOSPC else None)
            self.close()  # the watches held so far are of no use without this one
            return False
        self._folders.setdefault(wd, set()).add(folder)
        return True

    def changes(self) -> Changes | None:
        """What changed since the last call; None when events were lost (scan everything)."""
        out = Changes()
        folders = self._folders
        while True:
            try:
                data = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                break
            except OSError:
                self._overflowed = True
                break
            pos = 0
            while pos + _EVENT.size <= len(data):
                wd, mask, _cookie, size = _EVENT.unpack_from(data, pos)
                name = data[pos + _EVENT.size:pos + _EVENT.size + size].rstrip(b"\0")
                pos += _EVENT.size + size
                if mask & IN_Q_OVERFLOW:
                    self._overflowed = True
                    continue
                paths = folders.get(wd)
                if paths is None:
                    continue
                if mask & _SELF:
                    out.gone.update(paths)
                    if mask & IN_IGNORED:
                        folders.pop(wd, None)
                    elif mask & IN_MOVE_SELF:  # moved away: what is found at its paths later is another folder
                        folders.pop(wd, None)
                        self._libc.inotify_rm_watch(self.fd, wd)
                    continue
                for folder in paths:
                    if mask & _ENTRIES:
                        out.folders.add(folder)
                    out.files.add(os.path.join(folder, os.fsdecode(name)) if name else folder)
        if self._overflowed:
            self._overflowed = False
            log.info("log_watch_overflowed", consequence="this refresh stats every log file")
            return None
        return out

    def close(self) -> None:
        self.usable = False
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self._folders.clear()
