"""benchmarks/search_rank.py: the trials it picks, its rank correlation, and the recipes it writes (tiny, real)."""

from __future__ import annotations

import math

import pytest
from scripts import load_script

import compress
from compress.recipes import load
from compress.search import Budget, Proxy, SearchSpace


@pytest.fixture(scope="module")
def sr():
    return load_script("search_rank")


def _records(accs):
    return [{"number": i, "state": "complete", "proxy_accuracy": a} for i, a in enumerate(accs)]


def test_picks_spread_over_the_range_with_both_ends(sr):
    records = _records([0.5, 0.1, 0.9, 0.3, 0.7, 0.2, 0.8, 0.6, 0.4, 0.35]) + [
        {"number": 99, "state": "pruned", "proxy_accuracy": 0.95}, {"number": 98, "state": "rejected", "proxy_accuracy": None}]
    picked = sr.spread(records, 6)
    accs = [r["proxy_accuracy"] for r in picked]
    assert len(picked) == 6 and accs == sorted(accs) and accs[0] == 0.1 and accs[-1] == 0.9  # pruned trials never count
    with pytest.raises(ValueError, match="the search has 10 finished trials"):
        sr.spread(records, 11)


def test_spearman_is_one_for_the_same_order_and_minus_one_reversed(sr):
    assert sr.spearman([1, 2, 3, 4], [10, 20, 35, 40]) == pytest.approx(1.0)
    assert sr.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert sr.ranks([5, 1, 5, 3]) == [3.5, 1.0, 3.5, 2.0]  # ties share their mean rank
    assert sr.spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(0.8)  # 1 - 6 * 4 / (5 * 24)
    assert math.isnan(sr.spearman([1, 1, 1], [1, 2, 3]))


def test_the_written_recipes_rebuild_each_picked_trial(sr, tmp_path):
    space = SearchSpace(stages=(1, 2), blocks=(1, 2), widths=(0.0625, 0.125), kernels=(3,), se=("none", "stem"))
    proxy = Proxy(epochs=1, train_images=128, val_images=32, train={"batch_size": 64, "eval_batch_size": 64})
    result = compress.search("resnet18", space, Budget(params=None, latency_repeats=2, latency_min_block_s=0.002),
                             data=compress.data.synthetic(200, 16, seed=3), out=tmp_path / "search", proxy=proxy,
                             progress=False, n_trials=4, sampler="random", seed=1, pruner="none")
    picked = sr.spread(result.trials, 2)
    paths = sr.trial_recipes(tmp_path / "search", picked, tmp_path / "rank")
    for record, path in zip(picked, paths):
        model = load(path).build()
        assert path.stem == f"trial-{record['number']}"
        assert compress.count_params(model) == record["params"] and compress.count_flops(model) == record["flops"]
        assert model.config.describe() == record["architecture"]
    rows = [{"recipe": paths[0].stem, "measured_accuracy": 50.0, "tta": "mirror", "train_time_s": 20, "epochs_run": 10}]
    res = sr.result(picked, rows, 10)
    assert res["n"] == 1 and res["trials"][0]["epoch_time_s"] == 2.0 and res["spearman"] is None
