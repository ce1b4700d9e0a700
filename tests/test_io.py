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
