"""compress.files: atomic writes (also on a full disk), strict JSON, the folder lock, leftovers of kills."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from compress import files

ROOT = Path(__file__).resolve().parent.parent


def disk_full_for(monkeypatch, name: str) -> None:
    """Make writes of files called ``name`` go to /dev/full: the kernel answers ENOSPC, as a full disk does."""
    real = files._open_temp

    def open_temp(path, mode):
        f, tmp = real(path, mode)
        if path.name != name:
            return f, tmp
        f.close()  # the temporary file exists (and must be removed again); its bytes go nowhere
        return open("/dev/full", mode), tmp

    monkeypatch.setattr(files, "_open_temp", open_temp)


def test_atomic_write_replaces_whole_files_and_leaves_nothing_behind(tmp_path):
    target = tmp_path / "sub" / "a.json"
    files.write_json(target, {"x": 1})
    assert json.loads(target.read_text()) == {"x": 1}
    files.atomic_write(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    with pytest.raises(RuntimeError, match="boom"):
        with files.atomic_open(target) as f:
            f.write(b"half a file")
            raise RuntimeError("boom")
    assert target.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.json"]


def test_full_disk_keeps_the_old_file_and_says_no_space_left(tmp_path, monkeypatch):
    target = tmp_path / "report.md"
    files.atomic_write(target, "the good version\n")
    disk_full_for(monkeypatch, "report.md")
    with pytest.raises(OSError) as e:
        files.atomic_write(target, "x" * 100_000)
    assert e.value.errno == errno.ENOSPC
    assert str(target) in str(e.value) and "No space left on device" in str(e.value)
    assert target.read_text() == "the good version\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md"]


def test_json_with_nan_is_refused_not_written(tmp_path):
    with pytest.raises(ValueError, match="NaN or infinity"):
        files.write_json(tmp_path / "r.json", {"test_loss": float("nan")})
    with pytest.raises(ValueError, match="NaN or infinity"):
        files.write_json(tmp_path / "r.json", [{"acc": float("inf")}])
    assert not list(tmp_path.iterdir())


def test_folder_lock_refuses_a_second_holder_and_is_freed_when_the_holder_dies(tmp_path):
    folder = tmp_path / "run"
    with files.lock_folder(folder):
        with pytest.raises(files.FolderBusyError, match=f"in use by another process \\(pid {os.getpid()}\\)"):
            with files.lock_folder(folder):
                pass
    with files.lock_folder(folder):  # released at the end of the block
        pass
    # a process killed while holding the lock: the kernel frees it with the process
    code = f"import os, sys; sys.path.insert(0, {str(ROOT)!r}); from compress import files; " \
           f"files.lock_folder({str(folder)!r}).__enter__(); print('locked', flush=True); os.kill(os.getpid(), 9)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "locked" and done.returncode == -9, done.stderr
    with files.lock_folder(folder):
        pass


def test_leftovers_are_only_our_temporary_files(tmp_path):
    (tmp_path / "r").mkdir()
    ours = [tmp_path / ".results.json.k3j_x9ab.tmp", tmp_path / "r" / ".checkpoint.pt.abc123_z.tmp"]
    # the exact mkstemp form only: a name a user may have chosen (no dot, other lengths) is never deleted
    kept = [tmp_path / "notes.tmp", tmp_path / "manifest.json", tmp_path / "r" / "model.pt", tmp_path / "manifest.json.tmp",
            tmp_path / "r" / ".checkpoint.pt.abc123.tmp"]
    for p in ours + kept:
        p.write_text("x")
    assert sorted(files.remove_leftovers(tmp_path)) == sorted(ours)
    assert all(p.exists() for p in kept) and not any(p.exists() for p in ours)
