"""benchmarks/train_curve.py: run specs, the configs they give, and a finished run's record (tiny, synthetic)."""

from __future__ import annotations

import json

import pytest
from scripts import load_script


@pytest.fixture(scope="module")
def tc():
    return load_script("train_curve")


def test_specs_name_recipe_schedule_epochs_ablation_and_batch(tc):
    assert tc.parse_run("004:fast:10") == ("004", "fast", 10, None, None)
    assert tc.parse_run("004:fast-v2:5:-lookahead:b128") == ("004", "fast-v2", 5, "lookahead", 128)
    assert tc.parse_run("004:fast:5:-label_smoothing") == ("004", "fast", 5, "label_smoothing", None)
    for bad in ("004:fast", "004:slow:10", "004:fast:0", "004:fast-v1:5:-lookahead", "004:fast:5:-nothing", "004:fast:5:b0",
                "004:fast:5:-lookahead"):  # today's fast has no Lookahead to take out
        with pytest.raises(SystemExit):
            tc.parse_run(bad)


def test_each_ablation_takes_its_option_out_and_nothing_else(tc):
    full = tc.config_for("fast-v2", 5, None)
    assert full.epochs == 5 and full.lookahead is not None and full.label_smoothing == 0.2
    assert tc.config_for("fast-v2", 5, "lookahead").lookahead is None
    assert tc.config_for("fast", 5, "label_smoothing").label_smoothing == 0.0
    assert [a.name for a in tc.config_for("fast", 5, "alternating_flip").augment] == ["translate", "hflip"]
    assert [a.name for a in tc.config_for("fast", 5, "translate").augment] == ["random_crop", "alternating_flip"]
    assert tc.config_for("fast", 5, "tta").tta_level == "none"
    assert tc.config_for("fast", 5, "linear").schedule.name == "onecycle"
    for option in tc.ABLATIONS:
        changed = {k for k, v in tc.config_for("fast-v2", 5, option).to_dict().items() if full.to_dict()[k] != v}
        assert len(changed) <= 1, (option, changed)
    assert tc.config_for("fast", 5, None, 128).batch_size == 128
    assert tc.config_for("fast-v1", 2, None).schedule.name == "onecycle"


def test_a_run_writes_its_record_and_the_table(tc, tmp_path):
    out = tmp_path / "curve"
    assert tc.main(["train_curve.py", "004:fast:1:b32", "--data", "synthetic:64:32", "--out", str(out), "--no-progress"]) == 0
    record = json.loads((out / "004_fast_1_b32" / "curve.json").read_text())
    assert record["batch_size"] == 32 and record["epochs_run"] == 1 and record["tta"] == "mirror_translate"
    assert record["test_acc_final_epoch"] == pytest.approx(100 * record["history"][-1]["test_acc_tta"])
    assert {"model", "amx"} <= set(record["cpu"]) and record["git_commit"] and record["torch"]
    assert len(record["epoch_time_s"]) == 1
    table = (out / "results.md").read_text()
    assert "| 004:fast:1:b32 | 1,050,202 | 32 | 1 |" in table


def test_todays_fast_is_the_earlier_fast_without_lookahead(tc):
    # the committed runs named 004:fast:N:-lookahead (made when fast had Lookahead) are today's fast
    for epochs in (2, 5, 10):
        assert tc.config_for("fast", epochs, None) == tc.config_for("fast-v2", epochs, "lookahead")
    assert tc.config_for("fast", 5, None).lookahead is None


def test_the_lookahead_buffers_schedule_differs_from_fast_v2_in_that_only(tc):
    fast, buffers = tc.config_for("fast-v2", 5, None), tc.config_for("fast-lookahead-buffers", 5, None)
    assert buffers.lookahead.buffers and not fast.lookahead.buffers
    assert buffers.to_dict() | {"lookahead": None} == fast.to_dict() | {"lookahead": None}
    assert tc.parse_run("004:fast-lookahead-buffers:5") == ("004", "fast-lookahead-buffers", 5, None, None)
