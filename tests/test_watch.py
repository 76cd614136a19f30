"""A watched ingestor stats only what inotify names, and still misses nothing."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from exporter.config import SourceConfig
from exporter.logs.dedup import AGG_REQUESTS
from exporter.logs.ingestor import Ingestor
from exporter.prices import load_pricer
from exporter.logs.parse import COUNTED
from exporter.state import StateDB
from exporter.logs.watch import FolderWatcher
from tests.test_ingest import NOW, line

pytestmark = pytest.mark.skipif(FolderWatcher.create() is None, reason="no inotify on this system")


def _ingestor(tmp: Path, logs: Path, **kw) -> Ingestor:
    source = SourceConfig(name="cc", kind="claude_code", paths=(str(logs),))
    return Ingestor([source], StateDB(tmp / "state"), load_pricer(), clock=lambda: NOW, watch=True,
                    full_scan_seconds=kw.pop("full_scan_seconds", 1e9), **kw)


def _counted(ing: Ingestor) -> int:
    return ing.line_counts.get(("cc", COUNTED), 0)


def test_a_watched_refresh_stats_only_the_files_an_event_named(tmp_path: Path) -> None:
    logs = tmp_path / "projects"
    for i in range(50):
        (logs / f"p{i % 5}").mkdir(parents=True, exist_ok=True)
        (logs / f"p{i % 5}" / f"s{i}.jsonl").write_bytes(line(f"a{i}"))
    ing = _ingestor(tmp_path, logs)
    assert ing.refresh().statted == 50  # the first refresh scans everything
    assert _counted(ing) == 50
    assert ing.refresh().statted == 0  # nothing happened: nothing statted, not even a folder listed again

    with open(logs / "p3" / "s8.jsonl", "ab") as f:
        f.write(line("b8"))
    assert ing.refresh().statted == 1
    assert _counted(ing) == 51

    (logs / "p1" / "s1" / "subagents").mkdir(parents=True)  # a session's subagent folder, made later
    (logs / "p1" / "s1" / "subagents" / "agent-1.jsonl").write_bytes(line("c1") + line("c2"))
    stats = ing.refresh()
    assert _counted(ing) == 53
    assert stats.statted <= 2

    (logs / "p2" / "s7.jsonl").unlink()
    ing.refresh()
    assert ing.status["cc"].files == 50 and _counted(ing) == 53  # gone, and its requests still count
    ing.close()


def test_a_file_seen_through_a_symlink_is_statted_every_time(tmp_path: Path) -> None:
    """Writes to a link's target raise no event in the watched folder."""
    logs, elsewhere = tmp_path / "projects", tmp_path / "elsewhere"
    logs.mkdir()
    elsewhere.mkdir()
    (elsewhere / "real.jsonl").write_bytes(line("r1"))
    (logs / "linked.jsonl").symlink_to(elsewhere / "real.jsonl")
    ing = _ingestor(tmp_path, logs)
    ing.refresh()
    with open(elsewhere / "real.jsonl", "ab") as f:
        f.write(line("r2"))
    ing.refresh()
    assert _counted(ing) == 2
    ing.close()


@pytest.mark.parametrize("how", ["removed", "moved aside"])
def test_a_folder_replaced_by_another_of_the_same_name_is_read_anew(tmp_path: Path, how: str) -> None:
    """The new folder's files raised no event before it was watched: all of them are statted."""
    logs = tmp_path / "projects"
    (logs / "p" / "s" / "subagents").mkdir(parents=True)
    (logs / "p" / "s.jsonl").write_bytes(line("x1") + line("x2"))
    (logs / "p" / "s" / "subagents" / "a.jsonl").write_bytes(line("x3"))
    ing = _ingestor(tmp_path, logs)
    ing.refresh()
    if how == "removed":
        shutil.rmtree(logs / "p")
    else:
        os.rename(logs / "p", tmp_path / "p-old")  # out of the logs: its lines are gone from them
    (logs / "p" / "s" / "subagents").mkdir(parents=True)
    (logs / "p" / "s.jsonl").write_bytes(line("y1") + line("y2") + line("y3"))  # same names, new files
    (logs / "p" / "s" / "subagents" / "a.jsonl").write_bytes(line("y4") + line("y5"))
    ing.refresh()
    assert _counted(ing) == 3 + 5
    ing.close()


def test_a_folder_moved_within_the_logs_goes_on_from_its_offsets(tmp_path: Path) -> None:
    logs = tmp_path / "projects"
    (logs / "old").mkdir(parents=True)
    # no request ids: read twice, these lines would count twice
    body = b"".join(line(f"m{i}")[:-1].replace(f'"requestId": "req_m{i}", '.encode(), b"") + b"\n"
                    for i in range(3))
    (logs / "old" / "s.jsonl").write_bytes(body)
    ing = _ingestor(tmp_path, logs)
    ing.refresh()
    os.rename(logs / "old", logs / "new")
    with open(logs / "new" / "s.jsonl", "ab") as f:
        f.write(line("m9"))
    ing.refresh()
    assert _counted(ing) == 4
    assert sum(v[AGG_REQUESTS] for v in ing.aggregates.values()) == 4
    ing.close()


def test_without_trusting_events_every_refresh_is_a_full_scan(tmp_path: Path) -> None:
    logs = tmp_path / "projects"
    logs.mkdir()
    for i in range(7):
        (logs / f"s{i}.jsonl").write_bytes(line(f"z{i}"))
    ing = _ingestor(tmp_path, logs, full_scan_seconds=0)
    assert [ing.refresh().statted for _ in range(3)] == [7, 7, 7]
    ing.close()


@pytest.mark.parametrize("layout", ["glob of files", "a file named alone", "root folder is a symlink",
                                    "one folder under two paths", "root with a trailing slash"])
def test_files_no_watch_covers_are_statted_every_refresh(tmp_path: Path, layout: str) -> None:
    real = tmp_path / "real"
    real.mkdir()
    target = real / "s.jsonl"
    target.write_bytes(line("q1"))
    paths: tuple[str, ...]
    if layout == "glob of files":
        paths = (str(real / "*.jsonl"),)
    elif layout == "a file named alone":
        paths = (str(target),)
    elif layout == "root folder is a symlink":
        (tmp_path / "link").symlink_to(real)
        paths = (str(tmp_path / "link"),)
    elif layout == "one folder under two paths":  # the default config reads ~/.claude and ~/.config/claude
        (tmp_path / "other").symlink_to(real)
        paths = (str(real), str(tmp_path / "other"))
    else:
        paths = (str(real) + "/",)
    source = SourceConfig(name="cc", kind="claude_code", paths=paths)
    ing = Ingestor([source], StateDB(tmp_path / "state"), load_pricer(), clock=lambda: NOW, watch=True,
                   full_scan_seconds=1e9)
    ing.refresh()
    for i in range(2, 5):
        with open(target, "ab") as f:
            f.write(line(f"q{i}"))
        ing.refresh()
        assert ing.line_counts[("cc", COUNTED)] == i, layout
        if layout == "one folder under two paths":  # read by both: the copy is a duplicate
            assert sum(ing.line_counts.values()) == 2 * i
    ing.close()
