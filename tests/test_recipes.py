"""Recipes: every bundled recipe loads, builds its exact model and runs; malformed files fail clearly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from compress import count_params, recipes
from compress._schema import merge
from compress.recipes import RecipeError

from conftest import EXPECTED_PARAMS

ROOT = Path(__file__).resolve().parent.parent
RECIPES = recipes.BUILTIN_RECIPES

OURS = {"ours-l1-prune"}


@pytest.fixture(scope="session")
def loaded() -> dict[str, recipes.Recipe]:
    return {r.name: r for r in recipes.load_all(RECIPES)}


@pytest.fixture(scope="session")
def built(loaded) -> dict[str, torch.nn.Module]:
    """Each bundled recipe's model, built once per test session."""
    torch.manual_seed(0)
    return {name: r.build() for name, r in loaded.items() if r.weights is None or r.weights_path().is_file()}


def test_recipe_set(loaded):
    assert set(loaded) == set(EXPECTED_PARAMS)
    for path in recipes.recipe_paths(RECIPES):
        assert loaded[path.stem].path == path


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_recipe_builds_exact_model(name, loaded, built):
    if name not in built:
        pytest.skip(f"needs the published weights file {loaded[name].weights_path()} ($COMPRESS_WEIGHTS)")
    model = built[name]
    assert count_params(model) == EXPECTED_PARAMS[name]
    assert loaded[name].claims.params == EXPECTED_PARAMS[name]
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)


def test_reproductions_carry_claims_and_sources(loaded):
    for name, r in loaded.items():
        assert r.source.strip() and r.title
        if name not in OURS and name != "resnet18":
            assert r.claims.accuracy is not None and r.claims.accuracy_basis
        assert r.fast.epochs <= 30 and r.train_config("fast") is r.fast
        assert r.train_config("paper") is r.train


def test_002a_uses_sequential_pruning(loaded):
    (step,) = loaded["002a"].model
    assert step[0] == "prune" and step[1]["mode"] == "sequential"


def test_report_setups_are_data(loaded):
    r = loaded["003"].train
    assert r.lookahead is not None and r.lookahead.k == 5
    assert r.clip is not None and r.clip.value == 0.1 and r.clip.norm is None
    r = loaded["000"].train
    assert r.optimizer.name == "adam" and r.mixup is not None and r.batch_size == 32
    assert [a.name for a in r.augment] == ["random_crop", "hflip", "vflip", "grayscale"]
    assert loaded["001"].train.early_stopping.metric == "train_loss"
    assert loaded["002a"].train.val_split.seed == 43


def test_find_by_name_and_path():
    assert recipes.find("003", RECIPES) == RECIPES / "003.yaml"
    assert recipes.find(RECIPES / "004.yaml") == RECIPES / "004.yaml"
    with pytest.raises(RecipeError, match="known recipes: .*003"):
        recipes.find("nope", RECIPES)


# malformed recipes ----------------------------------------------------------------------------------
def _good() -> dict:
    return yaml.safe_load((RECIPES / "004.yaml").read_text())


def _write(tmp_path: Path, data: dict, name: str = "004") -> Path:
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def _error(tmp_path: Path, data: dict) -> str:
    path = _write(tmp_path, data)
    with pytest.raises(RecipeError) as e:
        recipes.load(path)
    msg = str(e.value)
    assert str(path) in msg
    return msg


def test_unknown_top_level_key(tmp_path):
    d = _good()
    d["modle"] = []
    msg = _error(tmp_path, d)
    assert "'modle'" in msg and "accepted keys: name, source, model, train, claims" in msg


def test_unknown_train_key(tmp_path):
    d = _good()
    d["train"]["optimizer"]["lrate"] = 0.1
    msg = _error(tmp_path, d)
    assert "train.optimizer" in msg and "'lrate'" in msg and "accepted keys: name, lr, momentum" in msg


def test_wrong_type(tmp_path):
    d = _good()
    d["train"]["epochs"] = "fifty"
    msg = _error(tmp_path, d)
    assert "train.epochs" in msg and "integer" in msg


def test_wrong_type_in_fast_override(tmp_path):
    d = _good()
    d["fast"] = {"batch_size": 1.5}
    assert "fast.batch_size" in _error(tmp_path, d)


def test_missing_field(tmp_path):
    d = _good()
    del d["claims"]
    msg = _error(tmp_path, d)
    assert "missing required key 'claims'" in msg and "accepted keys" in msg


def test_unknown_transform(tmp_path):
    d = _good()
    d["model"].append({"shrink": {"factor": 0.5}})
    msg = _error(tmp_path, d)
    assert "model[3]" in msg and "unknown transform 'shrink'" in msg and "scale_width" in msg


def test_unknown_transform_argument(tmp_path):
    d = _good()
    d["model"][1] = {"scale_width": {"factr": 0.25}}
    msg = _error(tmp_path, d)
    assert "scale_width" in msg and "'factr'" in msg and "accepted arguments: factor" in msg


def test_mistyped_transform_argument(tmp_path):
    d = _good()
    d["model"][0] = {"remove_stage": {"index": "last"}}
    msg = _error(tmp_path, d)
    assert "remove_stage.index" in msg and "integer" in msg


def test_name_must_match_file(tmp_path):
    d = _good()
    d["name"] = "four"
    assert "must match the file name" in _error(tmp_path, d)


def test_build_error_names_file_and_step(tmp_path):
    d = _good()
    d["model"][0] = {"remove_stage": {"index": 7}}
    r = recipes.load(_write(tmp_path, d))
    with pytest.raises(RecipeError, match=r"004\.yaml: model\[0\] remove_stage\(index=7\) failed"):
        r.build()


# every bundled training setup runs in the trainer --------------------------------------------------
@pytest.fixture(scope="session")
def tiny_data():
    from compress.data import synthetic

    return synthetic(96, 32)


@pytest.mark.parametrize("budget", ["paper", "fast"])
def test_every_training_setup_runs(budget, loaded, tiny_data):
    """Each recipe's optimizer, schedule, augmentations, mixup, clipping, Lookahead, early stopping and
    validation split go through the trainer (on a tiny model, small batches, 3 steps)."""
    import dataclasses

    from compress.models import ResNetConfig, resnet_from_config
    from compress.training import ValSplitConfig, train

    model = resnet_from_config(ResNetConfig.uniform((8, 16), (1, 1), (1, 2)))
    for name, r in sorted(loaded.items()):
        cfg = r.train_config(budget)
        cfg = dataclasses.replace(
            cfg, batch_size=8, eval_batch_size=64, amp="none", channels_last=False,
            val_split=ValSplitConfig(16, cfg.val_split.seed) if cfg.val_split else None,
        )
        result = train(model, tiny_data, cfg, epochs=1, max_steps_per_epoch=3, progress=False, device="cpu")
        assert result.epochs_run == 1, name


def test_fingerprint_ignores_settings_at_their_defaults():
    from compress.recipes import from_mapping

    base = {"name": "x", "source": "s", "model": [], "claims": {"params": 1}}
    plain = from_mapping({**base, "train": {"epochs": 3}})
    explicit = from_mapping({**base, "train": {"epochs": 3, "tta_flip": False, "compile": False}})
    other = from_mapping({**base, "train": {"epochs": 3, "tta_flip": True}})
    assert plain.fingerprint("paper") == explicit.fingerprint("paper") != other.fingerprint("paper")


def test_only_a_full_paper_run_is_compared_with_the_claim(loaded):
    from compress.bench import comparable

    full = {"name": "CIFAR-10", "train": 50_000, "test": 10_000}
    r = loaded["004"]
    assert comparable(r, "paper", full) is None
    assert comparable(r, "paper", full, epochs=50, overrides={"seed": 7}) is None  # the paper's own length; a seed
    assert comparable(r, "fast", full) == "the fast budget (10 epochs), not the paper's own schedule"
    assert comparable(r, "paper", full, epochs=5) == "5 epochs instead of the paper's 50"
    assert comparable(r, "paper", full, max_steps_per_epoch=3) == "at most 3 steps per epoch (a smoke run)"
    assert comparable(r, "paper", {**full, "train": 5000}) == "a subset of CIFAR-10 (5,000 train / 10,000 test images)"
    assert comparable(r, "paper", {**full, "name": "synthetic"}) == "trained on synthetic, not CIFAR-10"
    assert comparable(r, "paper", full, overrides={"lr": 0.1}) == "overridden lr 0.1"
    assert comparable(loaded["resnet18"], "paper", full) == "the paper claims no accuracy"


def test_two_files_of_one_name_are_an_error(tmp_path):
    text = (RECIPES / "004.yaml").read_text()
    (tmp_path / "004.yaml").write_text(text)
    (tmp_path / "004.yml").write_text(text.replace("final test accuracy", "another basis"))
    for call in (lambda: recipes.recipe_paths(tmp_path), lambda: recipes.find("004", tmp_path),
                 lambda: recipes.load_all(tmp_path)):
        with pytest.raises(RecipeError, match=r"recipe '004' is given more than once .*004\.yaml.*004\.yml"):
            call()


def test_duplicate_yaml_keys_are_an_error(tmp_path):
    text = (RECIPES / "004.yaml").read_text()
    assert text.count("\nmodel:") == 1
    # a second `model:` used to win silently and change the architecture
    (tmp_path / "004.yaml").write_text(text + "model:\n  - scale_width: {factor: 0.5}\n")
    with pytest.raises(RecipeError) as e:
        recipes.load(tmp_path / "004.yaml")
    line = text[:text.index("\nmodel:")].count("\n") + 2
    assert f"duplicate key 'model' (first given on line {line})" in str(e.value) and "\n" not in str(e.value)
    # nested mappings too
    (tmp_path / "004.yaml").write_text(text.replace("train:\n", "train:\n  epochs: 3\n", 1))
    with pytest.raises(RecipeError, match="duplicate key 'epochs'"):
        recipes.load(tmp_path / "004.yaml")


def test_binary_recipe_file_is_a_clear_error(tmp_path):
    (tmp_path / "004.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    with pytest.raises(RecipeError, match=r"004\.yaml: not a text file \(a recipe is UTF-8 YAML"):
        recipes.load(tmp_path / "004.yaml")


@pytest.mark.parametrize("section, change, message", [
    ("train", {"batch_size": 0}, "train: batch_size must be an integer >= 1, got 0"),
    ("train", {"epochs": -1}, "train: epochs must be an integer >= 1, got -1"),
    ("train", {"optimizer": {"lr": -0.1}}, "train.optimizer: lr must be a number >= 0, got -0.1"),
    ("train", {"optimizer": {"momentum": 1.5}}, "train.optimizer: momentum must be in [0, 1), got 1.5"),
    ("train", {"label_smoothing": 1.0}, "train: label_smoothing must be in [0, 1), got 1.0"),
    ("train", {"augment": [{"name": "hflip", "params": {"p": 2}}]},
     "train.augment[0]: augmentation 'hflip': p must be a probability in [0, 1], got 2"),
    ("train", {"val_split": {"size": 0}}, "train.val_split: size must be a number of images >= 1, got 0"),
    ("fast", {"schedule": {"pct_start": 0}}, "fast.schedule: pct_start must be in (0, 1), got 0"),
    ("fast", {"ema": 1.0}, "fast: ema must be a decay in (0, 1) or null, got 1.0"),
])
def test_out_of_range_values_fail_at_load_time(tmp_path, section, change, message):
    d = _good()
    d[section] = merge(d.get(section) or {}, change)
    assert message in _error(tmp_path, d)


def test_out_of_range_value_fails_the_dry_run(tmp_path, capsys):
    from compress.cli import main

    d = _good()
    d["train"]["batch_size"] = 0
    path = _write(tmp_path, d)
    assert main(["--dry-run", str(path)]) == 2
    out = capsys.readouterr().out
    assert "batch_size must be an integer >= 1, got 0" in out and len(out.strip().splitlines()) == 1


def test_numbers_in_exponent_notation_are_numbers(tmp_path):
    d = (RECIPES / "004.yaml").read_text().replace("weight_decay: 5.0e-4", "weight_decay: 5e-4")
    assert "weight_decay: 5e-4" in d
    (tmp_path / "004.yaml").write_text(d)
    assert recipes.load(tmp_path / "004.yaml").train.optimizer.weight_decay == 5e-4
