import os
import shutil
import subprocess
from pathlib import Path

import pytest

from inat_classifier.atomic import atomic_dir, atomic_path, write_json


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == '{\n  "a": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_atomic_path_keeps_the_extension_and_readable_permissions(tmp_path):
    with atomic_path(tmp_path / "model.keras") as tmp:
        assert tmp.suffix == ".keras"
        tmp.write_text("x")
    assert oct((tmp_path / "model.keras").stat().st_mode & 0o777) == "0o644"


def test_atomic_dir_replaces_whole_directory_only_on_success(tmp_path):
    target = tmp_path / "raw"
    with atomic_dir(target) as tmp:
        (tmp / "one").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "two").write_text("2")
            raise RuntimeError("interrupted")
    assert sorted(p.name for p in target.iterdir()) == ["one"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


@pytest.fixture
def disk_events(monkeypatch):
    """What reaches the disk, in order: fsync of a named file or folder, a system-wide sync, a rename."""
    events = []
    fsync, replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))) or fsync(fd))
    monkeypatch.setattr(os, "sync", lambda: events.append(("sync",)))
    monkeypatch.setattr(os, "replace", lambda a, b: events.append(("replace", str(a), str(b))) or replace(a, b))
    return events


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names open files through /proc")
def test_contents_reach_the_disk_before_the_rename_and_the_folder_after(tmp_path, disk_events):
    target = tmp_path / "out.json"
    write_json(target, {"a": 1})
    (_, tmp), (_, source, renamed), (_, folder) = disk_events
    assert source == tmp and renamed == str(target) and folder == str(tmp_path)
    disk_events.clear()
    with atomic_dir(tmp_path / "raw") as tmp:
        (tmp / "one").write_text("1")
    assert disk_events == [("sync",), ("replace", str(tmp), str(tmp_path / "raw")), ("fsync", str(tmp_path))]


def test_a_killed_runs_temporary_folders_are_removed_and_ignored_by_git(tmp_path):
    stale = [tmp_path / ".raw.k3j_9x2a.tmp", tmp_path / ".raw.old"]
    others = [tmp_path / ".raw.backup.tmp", tmp_path / ".rawer.abcdefgh.tmp", tmp_path / "raw.keep"]
    for folder in stale + others:
        (folder / "sub").mkdir(parents=True)
        (folder / "sub" / "photo.jpg").write_bytes(b"7 MB here")
    with atomic_dir(tmp_path / "raw") as tmp:
        (tmp / "one").write_text("1")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in [*others, tmp_path / "raw"])
    repo = Path(__file__).resolve().parents[1]
    if shutil.which("git") and (repo / ".git").exists():
        for leftover in ("data/.raw.k3j_9x2a.tmp/train/a.jpg", "models/.tmp.model.k3j_9x2a.keras"):
            assert subprocess.run(["git", "check-ignore", "-q", leftover], cwd=repo).returncode == 0, leftover


def test_outputs_get_the_permissions_the_umask_gives(tmp_path):
    old = os.umask(0o027)
    try:
        with atomic_dir(tmp_path / "raw") as tmp:
            (tmp / "one").write_text("1")
        with atomic_path(tmp_path / "model.keras") as tmp:
            tmp.write_text("x")
    finally:
        os.umask(old)
    assert oct((tmp_path / "raw").stat().st_mode & 0o777) == "0o750"
    assert oct((tmp_path / "model.keras").stat().st_mode & 0o777) == "0o640"
