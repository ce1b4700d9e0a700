import pytest
import torch

import compress


def test_save_load_round_trip_pruned_resnet(r18, x, tmp_path):
    m = compress.add_se(compress.prune(r18, {0: 0.1, 5: 0.3, "layer4": 0.25}, mode="sequential"), "blocks")
    m.eval()
    path = compress.save(m, tmp_path / "sub" / "m.pt", metadata={"recipe": "test"})
    back, meta = compress.load(path, with_metadata=True)
    assert type(back) is compress.ResNet and back.config == m.config
    assert meta == {"recipe": "test"}
    assert torch.equal(back(x), m(x))
    assert not back.training


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no saved model"):
        compress.load(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a file written by compress.save"):
        compress.load(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a file written by compress.save"):
        compress.load(tmp_path / "other.pt")
    with pytest.raises(TypeError, match="nn.Module"):
        compress.save("model", tmp_path / "x.pt")


def test_save_checks_metadata_before_replacing_a_good_file(tmp_path):
    import datetime
    from pathlib import Path

    import numpy as np

    m = compress.models.ResNet(compress.ResNetConfig.uniform((8, 16), (1, 1), (1, 2)))
    path = compress.save(m, tmp_path / "m.pt", metadata={"run": 1})
    before = path.read_bytes()
    for bad, what in (({"out": Path("runs/x")}, "PosixPath"), ({"when": datetime.datetime(2026, 1, 1)}, "datetime"),
                      ({"acc": np.zeros(3)}, "numpy.ndarray"), ({"nested": [{"p": Path("a")}]}, r"metadata\['nested'\]\[0\]\['p'\]")):
        with pytest.raises(TypeError, match=what):
            compress.save(m, path, metadata=bad)
        assert path.read_bytes() == before  # the good file is still there, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]  # and no temporary file is left
    # numpy scalars are numbers: stored as the Python number of the same value, and they load back
    compress.save(m, path, metadata={"acc": np.float32(0.5), "epochs": np.int64(3), "ok": np.bool_(True)})
    _, meta = compress.load(path, with_metadata=True)
    assert meta == {"acc": 0.5, "epochs": 3, "ok": True} and type(meta["acc"]) is float and type(meta["epochs"]) is int
