"""Where a measurement came from: command, commit, device, torch version and date (stored with results)."""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

import torch

__all__ = ["provenance", "git_commit", "head_commit", "running_commit", "device_name", "cpu_info"]


def git_commit(root: str | os.PathLike | None = None) -> str:
    """The checkout's commit, with ``-dirty`` appended when tracked files have uncommitted changes
    (``$COMPRESS_GIT_COMMIT`` wins, for copies of the tree without ``.git``; ``"unknown"`` without git).

    ``root`` is the checkout (default: the one this package is imported from)."""
    if os.environ.get("COMPRESS_GIT_COMMIT"):
        return os.environ["COMPRESS_GIT_COMMIT"]
    root = Path(root) if root is not None else _CHECKOUT

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()

    try:
        sha = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def head_commit(root: str | os.PathLike | None = None) -> str | None:
    """HEAD's commit as the checkout's ``.git`` files give it, read without running ``git`` (so cheaply
    that it is done at import); ``None`` where they cannot be read (no ``.git``, an unusual layout).

    Follows a worktree's or submodule's ``.git`` file, a symbolic HEAD, loose refs and ``packed-refs``."""
    root = Path(root) if root is not None else _CHECKOUT
    try:
        dot_git = root / ".git"
        if dot_git.is_file():  # a worktree or submodule: "gitdir: <path>"
            kind, _, where = dot_git.read_text().partition(":")
            if kind.strip() != "gitdir":
                return None
            git_dir = (root / where.strip()).resolve()
        elif dot_git.is_dir():
            git_dir = dot_git
        else:
            return None
        head = (git_dir / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head if re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", head) else None
        ref = head.partition(":")[2].strip()
        common = git_dir / "commondir"
        common_dir = (git_dir / common.read_text().strip()).resolve() if common.is_file() else git_dir
        for folder in (git_dir, common_dir):
            if (folder / ref).is_file():
                return (folder / ref).read_text().strip()
        packed = common_dir / "packed-refs"
        for line in packed.read_text().splitlines() if packed.is_file() else []:
            sha, _, name = line.partition(" ")
            if name == ref and not line.startswith(("#", "^")):
                return sha
    except (OSError, UnicodeDecodeError):
        return None
    return None


def running_commit() -> str:
    """The commit of the code this process runs: :func:`git_commit` read once, on first use, then kept.

    A long run records this, not the checkout's state when it finishes: commits and edits made while it
    ran did not change the code it had loaded. ``import compress`` runs no ``git``: it only notes HEAD's
    commit from the ``.git`` files (:func:`head_commit`). On first use ``git`` is asked; if HEAD has moved
    since the import, the commit recorded is the one imported, marked ``-dirty`` (whether its files were
    clean is no longer known). ``$COMPRESS_GIT_COMMIT`` wins, as for :func:`git_commit`.
    """
    global _running
    if os.environ.get("COMPRESS_GIT_COMMIT"):
        return os.environ["COMPRESS_GIT_COMMIT"]
    if _running is None:
        now = git_commit()
        moved = _HEAD_AT_IMPORT is not None and now.partition("-dirty")[0] != _HEAD_AT_IMPORT
        _running = f"{_HEAD_AT_IMPORT}-dirty" if moved else now
    return _running


_CHECKOUT = Path(__file__).resolve().parent.parent  # the checkout this package is imported from
_HEAD_AT_IMPORT = head_commit()  # file reads only: the commit of the code this process loads
_running: str | None = None  # running_commit()'s value, once read


def device_name(device: str | torch.device) -> str:
    """A readable name for ``device``: the GPU model, or the CPU and its core count."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cores, threads = os.cpu_count() or 1, torch.get_num_threads()
    return (f"CPU {_cpu_model() or platform.processor() or platform.machine()} "
            f"({_count(cores, 'core')}, {_count(threads, 'thread')})")


def _count(n: int, noun: str) -> str:
    """``n`` and ``noun``, plural unless ``n`` is 1: ``1 thread``, ``2 threads``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def cpu_info() -> dict[str, Any]:
    """The CPU's model name and whether it has AMX bf16 matrix units and AVX-512 BF16 (Linux /proc/cpuinfo;
    ``None`` where unknown): the two features that decide how fast bf16 training runs on a CPU."""
    flags: set[str] | None = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.partition(":")[2].split())
                break
    except OSError:
        pass
    return {
        "model": _cpu_model() or platform.processor() or platform.machine(),
        "amx": None if flags is None else "amx_bf16" in flags,
        "avx512_bf16": None if flags is None else "avx512_bf16" in flags,
    }


def _cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), or ``""``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return ""


def provenance(device: str | torch.device | None = None, argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line, git commit, device and its name (on a CPU also :func:`cpu_info`), torch version and UTC
    date, as a plain dict."""
    if argv is None:
        prog = Path(sys.argv[0]).name
        argv = ["python -m compress" if prog == "__main__.py" else prog, *sys.argv[1:]]
    out: dict[str, Any] = {
        "command": shlex.join(argv[1:]) and f"{argv[0]} {shlex.join(argv[1:])}" or argv[0],
        "git_commit": running_commit(),
        "torch": torch.__version__,
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if device is not None:
        out["device"] = str(device)
        out["device_name"] = device_name(device)
        if torch.device(device).type == "cpu":
            out["cpu"] = cpu_info()  # AMX or not: what decides a CPU's bf16 speed
    return out
