"""benchmarks/train_speed.py runs both loops on the CPU and writes a complete JSON record."""

import json
from pathlib import Path

import numpy as np
from scripts import load_script

ROOT = Path(__file__).resolve().parent.parent


def _load_benchmark():
    return load_script("train_speed")


def _speedup_fits_rates(trainer: float, plain: float, speedup: float) -> bool:
    """Whether ``speedup`` (the unrounded ratio, rounded to 0.01) can come from rates shown rounded to 0.1 img/s."""
    lo = (trainer - 0.05) / (plain + 0.05)
    hi = (trainer + 0.05) / (plain - 0.05) if plain > 0.05 else float("inf")
    return lo - 0.005 <= speedup <= hi + 0.005


def test_speedup_check_allows_for_rounded_rates():
    # a busy machine: 3.04 and 1.96 img/s are written as 3.0 and 2.0, their ratio as 1.55 (not 1.50)
    assert _speedup_fits_rates(3.0, 2.0, round(3.04 / 1.96, 2))
    assert not _speedup_fits_rates(3.0, 2.0, 1.70) and not _speedup_fits_rates(3.0, 2.0, 1.40)
    assert _speedup_fits_rates(1234.5, 432.1, round(1234.5 / 432.1, 2))


def test_train_speed_writes_json(tmp_path):
    rng = np.random.default_rng(0)
    npz = tmp_path / "tiny.npz"
    np.savez(npz, train_x=rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8), train_y=rng.integers(0, 10, 64),
             test_x=rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8), test_y=rng.integers(0, 10, 16))
    out = _load_benchmark().main(["--data", str(npz), "--steps", "2", "--batch-size", "4", "--device", "cpu",
                                  "--workers", "0", "--models", "003", "--out", str(tmp_path / "results")])
    written = json.loads(next((tmp_path / "results").glob("train_speed-cpu-*.json")).read_text())
    assert written == out
    for key in ("command", "git_commit", "device", "torch", "date"):
        assert written[key], key
    (row,) = written["results"]
    assert row["model"] == "003" and row["params"] == 4_697_742
    assert row["trainer_images_per_s"] > 0 and row["plain_images_per_s"] > 0
    assert _speedup_fits_rates(row["trainer_images_per_s"], row["plain_images_per_s"], row["speedup"])
    assert "CPU" in written["note"]


def test_measure_gpu_script_runs_on_cpu_and_copies_every_result(tmp_path):
    """benchmarks/measure_gpu.sh, the one command of a GPU session, on the CPU with tiny data and steps."""
    import os
    import subprocess
    import sys

    rng = np.random.default_rng(0)
    npz = tmp_path / "tiny.npz"
    np.savez(npz, train_x=rng.integers(0, 256, (48, 32, 32, 3), dtype=np.uint8), train_y=rng.integers(0, 10, 48),
             test_x=rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8), test_y=rng.integers(0, 10, 16))
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",  # python3 = this one
        "DEVICE": "cpu", "RESULTS_DIR": str(tmp_path / "results"), "RUNS_DIR": str(tmp_path / "runs"),
        "RESULTS_OUT": str(tmp_path / "back"), "COMPRESS_GIT_COMMIT": "abc123",
        "SPEED_ARGS": "--steps 1 --batch-size 4 --workers 0 --models 003",
        "BENCH_ARGS": "--epochs 1 --max-steps-per-epoch 1",
    }
    cmd = ["bash", str(ROOT / "benchmarks" / "measure_gpu.sh"), str(npz), "fast", "004"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "epoch   1  train" in done.stdout  # a line per epoch in the log, the only progress a remote call shows
    back = sorted(p.name for p in (tmp_path / "back").iterdir())
    speed = [n for n in back if n.startswith("train_speed-cpu-")]
    assert len(speed) == 1 and sorted(set(back) - set(speed)) == sorted(
        ["results.json", "report.md", "accuracy_vs_params.png", "accuracy_vs_flops.png", "training_curves.png"])
    results = json.loads((tmp_path / "back" / "results.json").read_text())
    (row,) = results["rows"]
    assert row["recipe"] == "004" and row["params"] == 1_050_202 and row["epochs_run"] == 1
    assert row["device"] == "cpu" and row["git_commit"] == "abc123"
    assert json.loads((tmp_path / "back" / speed[0]).read_text())["git_commit"] == "abc123"
    # a second call the same day skips the speed benchmark and the finished recipe
    (speed_file,) = (tmp_path / "results").glob("train_speed-cpu-*.json")
    stamp = speed_file.stat().st_mtime_ns
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "004: already finished, skipping" in again.stdout
    assert speed_file.stat().st_mtime_ns == stamp and len(list((tmp_path / "results").glob("train_speed-*"))) == 1


def _repo_with_one_commit(path):
    """A fresh git repository at ``path`` with ``a.py`` committed: the git argv prefix for it, and the commit."""
    import subprocess

    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(path)]
    subprocess.run([*git, "init", "-q"], check=True)
    (path / "a.py").write_text("x = 1\n")
    subprocess.run([*git, "add", "a.py"], check=True)
    subprocess.run([*git, "commit", "-qm", "a"], check=True)
    return git, subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()


def test_git_commit_marks_uncommitted_changes(tmp_path, monkeypatch):
    from compress.provenance import git_commit

    monkeypatch.delenv("COMPRESS_GIT_COMMIT", raising=False)
    assert git_commit(tmp_path) == "unknown"  # not a git checkout
    _, sha = _repo_with_one_commit(tmp_path)
    (tmp_path / "new.py").write_text("")  # untracked files do not count
    assert git_commit(tmp_path) == sha
    (tmp_path / "a.py").write_text("x = 2\n")
    assert git_commit(tmp_path) == f"{sha}-dirty"
    monkeypatch.setenv("COMPRESS_GIT_COMMIT", "given")
    assert git_commit(tmp_path) == "given"


def test_provenance_records_the_commit_the_process_imported(monkeypatch):
    """A run that lasts hours records the code it loaded, not the checkout's state when it ends."""
    from compress import provenance as prov

    monkeypatch.delenv("COMPRESS_GIT_COMMIT", raising=False)
    first = prov.running_commit()
    assert first != "" and (prov._HEAD_AT_IMPORT is None or first.startswith(prov._HEAD_AT_IMPORT))
    monkeypatch.setattr(prov, "git_commit", lambda root=None: "b" * 40)  # the checkout moved on meanwhile
    assert prov.provenance("cpu")["git_commit"] == first  # read once, then kept
    monkeypatch.setattr(prov, "_running", None)  # as if first asked only now, after HEAD moved on
    monkeypatch.setattr(prov, "_HEAD_AT_IMPORT", "a" * 40)
    assert prov.running_commit() == "a" * 40 + "-dirty"  # the commit imported; its tree's state is unknown
    monkeypatch.setattr(prov, "_running", None)
    monkeypatch.setattr(prov, "git_commit", lambda root=None: "a" * 40)  # HEAD where it was: git's own answer
    assert prov.running_commit() == "a" * 40
    monkeypatch.setenv("COMPRESS_GIT_COMMIT", "given")
    assert prov.provenance()["git_commit"] == "given"


def test_head_commit_reads_the_git_files_of_checkouts_and_worktrees(tmp_path):
    import subprocess

    from compress.provenance import head_commit

    repo = tmp_path / "repo"
    repo.mkdir()
    assert head_commit(repo) is None  # not a checkout
    git, sha = _repo_with_one_commit(repo)
    assert head_commit(repo) == sha  # a loose ref
    subprocess.run([*git, "pack-refs", "--all"], check=True)
    assert head_commit(repo) == sha  # packed-refs
    subprocess.run([*git, "worktree", "add", "-q", "-b", "side", str(tmp_path / "wt")], check=True)
    (tmp_path / "wt" / "a.py").write_text("x = 2\n")
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path / "wt"), "commit", "-qam", "b"],
                   check=True)
    side = subprocess.run([*git, "rev-parse", "side"], check=True, capture_output=True, text=True).stdout.strip()
    assert side != sha and head_commit(tmp_path / "wt") == side and head_commit(repo) == sha
    subprocess.run([*git, "checkout", "-q", "--detach", sha], check=True)
    assert head_commit(repo) == sha  # a detached HEAD


def test_cpu_device_name_counts_cores_and_threads_in_good_english(monkeypatch):
    from compress import provenance as prov

    monkeypatch.setattr(prov, "_cpu_model", lambda: "Test CPU")
    monkeypatch.setattr(prov.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(prov.torch, "get_num_threads", lambda: 1)
    assert prov.device_name("cpu") == "CPU Test CPU (2 cores, 1 thread)"
    monkeypatch.setattr(prov.os, "cpu_count", lambda: 1)
    monkeypatch.setattr(prov.torch, "get_num_threads", lambda: 2)
    assert prov.device_name("cpu") == "CPU Test CPU (1 core, 2 threads)"
