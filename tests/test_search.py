"""compress.search: budget, pruning, several workers on one storage, kill -9 and resume, the emitted recipe.

Everything is real (torch, fvcore, optuna, SQLite); the models are a few hundred parameters wide and
the proxies one or two epochs of 256 synthetic images, so the file runs in well under a minute.
"""

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import compress
import compress.search
from compress.recipes import load
from compress.search import Budget, Proxy, SearchSpace, build, pareto_front, trained_trials

SPACE = SearchSpace(stages=(1, 2), blocks=(1, 2), widths=(0.0625, 0.125), kernels=(3,), se=("none", "stem"))
PROXY = Proxy(epochs=1, train_images=256, val_images=64, train={"batch_size": 64, "eval_batch_size": 64})
FAST_LATENCY = dict(latency_repeats=2, latency_min_block_s=0.002)
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def data():
    return compress.data.synthetic(320, 16, seed=3)


def candidate_params(space: SearchSpace) -> list[int]:
    """The params of every candidate of a small space (built exactly as the search builds them)."""
    base = compress.resnet18()
    counts = []
    for n in space.stages:
        for combo in itertools.product(space.blocks, space.widths, repeat=n):
            for se in space.se:
                choice = {"stages": n, "se": se, "whiten": False}
                for i in range(n):
                    choice.update({f"blocks_{i}": combo[2 * i], f"width_{i}": combo[2 * i + 1], f"kernel_{i}": 3})
                counts.append(compress.count_params(build(base, space.steps(choice, base.config))))
    return sorted(counts)


def run_search(data, out, **kw):
    """A search of the tiny space (through ``compress.search(...)``: the package is callable)."""
    kw.setdefault("budget", Budget(params=None, **FAST_LATENCY))
    return compress.search("resnet18", kw.pop("space", SPACE), kw.pop("budget"), data=data, out=out,
                           proxy=kw.pop("proxy", PROXY), progress=False, **kw)


def test_budget_is_never_exceeded_and_over_budget_candidates_are_never_trained(data, tmp_path):
    counts = candidate_params(SPACE)
    limit = counts[len(counts) // 2]  # about half the space is over budget
    budget = Budget(params=limit, **FAST_LATENCY)
    result = run_search(data, tmp_path, budget=budget, n_trials=4, sampler="random", seed=1)
    states = [r["state"] for r in result.trials]
    assert states.count("rejected") >= 1 and states.count("complete") + states.count("pruned") == 4
    for r in result.trials:
        if r["state"] == "rejected":
            assert r["params"] > limit and "budget" in r["rejected"]
            assert r["epochs_run"] == 0 and r["val_acc_per_epoch"] == [] and r["latency_ms"] is None
            assert not (tmp_path / "trials" / "search" / str(r["number"])).exists()  # no training folder: never trained
        else:
            assert r["params"] <= limit
            assert (tmp_path / "trials" / "search" / str(r["number"]) / "history.json").is_file()
    frozen = {t.number: t for t in result.study.trials}
    assert all(not frozen[r["number"]].intermediate_values for r in result.trials if r["state"] == "rejected")
    written = json.loads((tmp_path / "trials.json").read_text())
    assert [t["number"] for t in written["trials"]] == [r["number"] for r in result.trials]
    assert written["settings"]["budget"]["params"] == limit


def test_a_latency_budget_rejects_before_training(data, tmp_path):
    result = run_search(data, tmp_path, budget=Budget(params=None, latency_ms=1e-6, **FAST_LATENCY), n_trials=1,
                        max_rejected_in_a_row=3, sampler="random", seed=0)
    assert [r["state"] for r in result.trials] == ["rejected"] * 3
    assert all(r["latency_ms"] > 1e-6 and "ms > budget" in r["rejected"] for r in result.trials)
    assert result.best is None and not (tmp_path / "trials").exists()


def test_the_emitted_recipe_rebuilds_the_best_trial_exactly(data, tmp_path):
    space = SearchSpace(stages=(2,), blocks=(1, 3), widths=(0.0625,), kernels=(3, 5), se=("none", "blocks"), whiten=(True,))
    result = run_search(data, tmp_path, space=space, n_trials=3, sampler="random", seed=2)
    best = result.best
    assert best is not None and best["state"] == "complete"
    assert best["proxy_accuracy"] == max(r["proxy_accuracy"] for r in result.trials if r["state"] == "complete")
    recipe = load(result.files["recipe"])
    assert recipe.name == "search-best" and recipe.claims.params == best["params"]
    model = recipe.build()
    assert compress.count_params(model) == best["params"]
    assert compress.count_flops(model) == best["flops"]
    assert model.config.describe() == best["architecture"]
    assert [n for n, _ in recipe.model][-1] == "whiten_stem"
    assert recipe.train_config("paper").epochs == compress.recipes.FAST_TRAIN["epochs"]
    for name in ("accuracy_vs_params.png", "accuracy_vs_latency.png", "best.json"):
        assert (tmp_path / name).stat().st_size > 0


def test_weak_trials_are_pruned_after_their_first_epoch(data, tmp_path):
    proxy = Proxy(epochs=4, train_images=256, val_images=64, train={"batch_size": 64, "eval_batch_size": 64})
    never_good_enough = optuna.pruners.ThresholdPruner(lower=1.01)  # accuracy cannot reach it: prune at once
    result = run_search(data, tmp_path, proxy=proxy, n_trials=2, pruner=never_good_enough, sampler="random", seed=0)
    assert [r["state"] for r in result.trials] == ["pruned", "pruned"]
    for r in result.trials:
        assert r["pruned_at_epoch"] == 1 and r["epochs_run"] == 1 and len(r["val_acc_per_epoch"]) == 1
        history = json.loads((tmp_path / "trials" / "search" / str(r["number"]) / "history.json").read_text())
        assert len(history) < 4  # training stopped early (the thread reads history.json 20 times a second)
        assert not (tmp_path / "trials" / "search" / str(r["number"]) / "checkpoint.pt").exists()
    assert result.best is None


def test_joining_a_study_with_other_settings_is_refused(data, tmp_path):
    run_search(data, tmp_path, n_trials=1, sampler="random", seed=0)
    with pytest.raises(ValueError, match="was started with another space"):
        run_search(data, tmp_path, space=SearchSpace(stages=(1,), blocks=(1,), widths=(0.0625,), kernels=(3,),
                                                     se=("none",)), n_trials=2)


def test_bad_input_is_refused_in_one_line(data, tmp_path):
    with pytest.raises(ValueError, match="asks for 5 stages"):
        run_search(data, tmp_path, space=SearchSpace(stages=(5,)), n_trials=1)
    with pytest.raises(ValueError, match="not an odd kernel size"):
        SearchSpace(kernels=(4,))
    with pytest.raises(ValueError, match="objectives must be"):
        run_search(data, tmp_path, n_trials=1, objectives=("latency",))
    with pytest.raises(ValueError, match="Budget.params"):
        Budget(params=0)
    with pytest.raises(compress.recipes.RecipeError, match="not a plain name"):
        run_search(data, tmp_path, n_trials=1, recipe_name="../elsewhere")


def test_the_command_line_refuses_bad_input_in_one_line(tmp_path, capsys):
    import argparse

    from compress.search import cli

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["--out", str(tmp_path), "--data", "synthetic:64:8", "--kernels", "3,4"])
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "kernels: 4 is not an odd kernel size" in err
    assert not (tmp_path / "study.db").exists()


def test_a_multi_objective_study_has_no_pruning_and_scores_every_objective(data, tmp_path):
    result = run_search(data, tmp_path, n_trials=2, objectives=("accuracy", "params"), sampler="random", seed=0)
    assert [d.name for d in result.study.directions] == ["MAXIMIZE", "MINIMIZE"]
    for t in result.study.trials:
        assert t.state == TrialState.COMPLETE and not t.intermediate_values
        assert t.values == [t.user_attrs["proxy_accuracy"], t.user_attrs["params"]]
    assert result.best["proxy_accuracy"] == max(t.values[0] for t in result.study.trials)


def test_pareto_front():
    pts = [(1.0, 50.0), (2.0, 40.0), (3.0, 70.0), (3.0, 60.0), (4.0, 70.0), (5.0, 80.0)]
    assert pareto_front(pts) == [0, 2, 5]


# --- several processes on one storage -------------------------------------------------------------

def worker(out: Path, trials: int, seed: int, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "compress.search", "--out", str(out), "--data", "synthetic:320:16",
           "--trials", str(trials), "--seed", str(seed), "--no-progress", "--no-params-budget",
           "--stages", "1,2", "--blocks", "1,2", "--widths", "0.0625,0.125", "--kernels", "3", "--se", "none,stem",
           "--epochs", "1", "--train-images", "256", "--val-images", "64", "--batch-size", "64",
           "--latency-repeats", "2", "--latency-block", "0.002", "--sampler", "random", *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}  # two workers share the CPU cores
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def study_of(out: Path) -> optuna.Study:
    return optuna.load_study(study_name="search", storage=compress.search.default_storage(out))


def test_two_workers_on_one_storage_run_distinct_trials_and_reach_the_count(tmp_path):
    procs = [worker(tmp_path, 6, seed) for seed in (1, 2)]
    logs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    study = study_of(tmp_path)
    trained = trained_trials(study)
    assert 6 <= len(trained) <= 7  # a trial already running in the other worker when the count is reached finishes
    assert len({t.user_attrs["worker"] for t in trained}) == 2, logs  # both took part
    assert len({t.number for t in trained}) == len(trained)
    folders = {int(p.name) for p in (tmp_path / "trials" / "search").iterdir()}
    assert {t.number for t in trained} <= folders  # each trained once, in its own folder
    assert all(t.state != TrialState.RUNNING for t in study.trials)


def test_kill_9_and_a_restart_lose_no_finished_trial(tmp_path):
    proc = worker(tmp_path, 6, 1, "--heartbeat", "1", "--epochs", "2")
    deadline = time.time() + 90
    running = None
    while time.time() < deadline and proc.poll() is None:
        try:
            trials = study_of(tmp_path).get_trials(deepcopy=False)
        except Exception:  # noqa: BLE001 - the study is not created yet
            time.sleep(0.05)
            continue
        done = [t for t in trials if t.state == TrialState.COMPLETE]
        training = [t for t in trials if t.state == TrialState.RUNNING and "latency_ms" in t.user_attrs]
        if done and training:
            running = training[0].number
            break
        time.sleep(0.02)
    assert running is not None, proc.communicate()[0]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {t.number: (t.value, t.params) for t in study_of(tmp_path).trials if t.state == TrialState.COMPLETE}
    assert before
    written = {r["number"]: r for r in json.loads((tmp_path / "trials.json").read_text())["trials"]}  # after each trial
    assert all(written[n]["state"] == "complete" for n in before if n in written) and set(written) & set(before)
    time.sleep(2.5)  # the killed trial's heartbeat is now older than its grace period (2 x 1 s)
    again = worker(tmp_path, 6, 2, "--heartbeat", "1", "--epochs", "2")
    log = again.communicate(timeout=120)[0]
    assert again.returncode == 0, log
    study = study_of(tmp_path)
    after = {t.number: t for t in study.trials}
    for number, (value, params) in before.items():
        assert after[number].state == TrialState.COMPLETE and after[number].value == value and after[number].params == params
    assert after[running].state == TrialState.FAIL
    retried = [t for t in study.trials if t.user_attrs.get("retry_of") == running]
    assert retried and retried[0].params == after[running].params
    assert len(trained_trials(study)) >= 6
    records = json.loads((tmp_path / "trials.json").read_text())["trials"]
    assert {r["number"] for r in records} == set(after)
