"""compress.weights: published checkpoints by name, found in $COMPRESS_WEIGHTS or torch's hub cache, else
downloaded (torch.hub.download_url_to_file, here from a file:// URL: this machine has no internet), hash checked."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest
import torch

from compress import recipes
from compress import weights as published
from compress.cli import main
from compress.recipes import RecipeError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch hub cache and no $COMPRESS_WEIGHTS."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.delenv("COMPRESS_WEIGHTS", raising=False)
    return tmp_path / "torch-home" / "hub" / "checkpoints"


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A published entry ``tiny-0`` whose URL is a local file (file://)."""
    src = tmp_path / "upstream" / "tiny-0.th"
    src.parent.mkdir()
    torch.save({"state_dict": {"w": torch.arange(5.0)}}, src)
    entry = published.Published("tiny-0.th", src.as_uri(), hashlib.sha256(src.read_bytes()).hexdigest(), "auto",
                                "MIT", 5, 10.0)
    monkeypatch.setitem(published.PUBLISHED, "tiny-0", entry)
    return entry, src


def test_fetch_downloads_once_into_the_hub_cache(hub, tiny):
    entry, src = tiny
    assert published.find_local("tiny-0") is None
    path = published.fetch("tiny-0", progress=False)
    assert path == hub / "tiny-0.th" and path.read_bytes() == src.read_bytes()
    src.unlink()  # the second time it is not downloaded again
    assert published.fetch("tiny-0.th", progress=False) == path
    assert published.find_local("tiny-0") == path


def test_a_download_with_another_hash_is_refused_and_leaves_nothing(hub, tiny, monkeypatch):
    entry, _ = tiny
    monkeypatch.setitem(published.PUBLISHED, "tiny-0", dataclasses.replace(entry, sha256="0" * 64))
    with pytest.raises(ValueError, match="did not give the published tiny-0.th"):
        published.fetch("tiny-0", progress=False)
    assert not (hub / "tiny-0.th").exists()


def test_compress_weights_folder_is_used_without_a_download(hub, tiny, tmp_path, monkeypatch):
    entry, src = tiny
    offline = tmp_path / "offline"
    offline.mkdir()
    (offline / "tiny-0.th").write_bytes(src.read_bytes())
    monkeypatch.setitem(published.PUBLISHED, "tiny-0", dataclasses.replace(entry, url="http://compress.invalid/x"))
    monkeypatch.setenv("COMPRESS_WEIGHTS", str(offline))
    assert published.fetch("tiny-0") == offline / "tiny-0.th"
    assert not hub.exists()
    (offline / "tiny-0.th").write_bytes(b"another file")
    with pytest.raises(ValueError, match="SHA-256 differs"):
        published.fetch("tiny-0")


def test_no_network_and_no_file_says_where_it_looked(hub, tiny, monkeypatch):
    entry, _ = tiny
    monkeypatch.setitem(published.PUBLISHED, "tiny-0", dataclasses.replace(entry, url="http://compress.invalid/tiny-0.th"))
    with pytest.raises(published.WeightsNotFoundError, match=r"cannot be downloaded .*COMPRESS_WEIGHTS"):
        published.fetch("tiny-0", progress=False)
    with pytest.raises(ValueError, match="no published weights named 'nope'; known: .*resnet56-4bfd9763"):
        published.fetch("nope")


def test_a_recipe_names_published_weights(hub, tiny, tmp_path):
    entry, src = tiny
    data = {"name": "t", "source": "s", "model": [], "finetune": False, "claims": {"params": 1},
            "weights": {"name": "tiny-0"}}
    r = recipes.from_mapping(data)
    assert r.weights.expected_sha256 == entry.sha256 and r.transforms_summary() == "weights(tiny-0)"
    assert r.weights_path(download=True) == hub / "tiny-0.th"
    with pytest.raises(RecipeError, match="not the SHA-256 of the published"):
        recipes.from_mapping({**data, "weights": {"name": "tiny-0", "sha256": "1" * 64}})
    with pytest.raises(RecipeError, match="no published weights named"):
        recipes.from_mapping({**data, "weights": {"name": "tiny-1"}})


def test_no_bundled_recipe_names_a_folder_beside_the_checkout():
    for path in recipes.recipe_paths(recipes.BUILTIN_RECIPES):
        assert "../shared" not in path.read_text(), path


def test_dry_run_without_network_or_files_skips_saying_why(hub, monkeypatch, capsys):
    for name, entry in list(published.PUBLISHED.items()):  # as on a machine without internet, wherever this runs
        monkeypatch.setitem(published.PUBLISHED, name, dataclasses.replace(entry, url=f"http://compress.invalid/{entry.file}"))
    assert main(["--dry-run", "--recipes-dir", str(recipes.BUILTIN_RECIPES)]) == 0
    out = capsys.readouterr().out
    assert "skipping report003-" in out and "cannot be downloaded" in out and "../shared" not in out


def test_weights_dir_flag_is_compress_weights(hub, tiny, tmp_path, monkeypatch, capsys):
    entry, src = tiny
    offline = tmp_path / "offline"
    offline.mkdir()
    for name, e in list(published.PUBLISHED.items()):
        monkeypatch.setitem(published.PUBLISHED, name, dataclasses.replace(e, url=f"http://compress.invalid/{e.file}"))
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "t.yaml").write_text("name: t\nsource: s\nmodel: []\nfinetune: false\nclaims: {params: 1}\n"
                                            "weights: {name: tiny-0}\n")
    assert main(["--dry-run", "--recipes-dir", str(tmp_path / "r")]) == 0
    assert "skipping t:" in capsys.readouterr().out
    (offline / "tiny-0.th").write_bytes(src.read_bytes())
    main(["--dry-run", "--recipes-dir", str(tmp_path / "r"), "--weights-dir", str(offline)])
    assert "skipping" not in capsys.readouterr().out
