"""whiten_stem: a frozen patch-whitening conv in front of the stem (airbench's first layer)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import compress
from compress import recipes
from compress.models import ResNet, ResNetConfig, WhiteningConv, resnet_from_config, with_normalization
from compress.training.config import CIFAR10_MEAN, CIFAR10_STD
from compress.transforms.whiten import init_whitening, whiten_stem, whitening_weights

from conftest import assert_unchanged, snapshot

R18_WHITENED = 11_173_962 + 24 * 3 * 2 * 2 + 64 * (24 - 3) * 3 * 3  # + whitening filters + the wider stem conv


def _tiny(**kw) -> ResNet:
    torch.manual_seed(0)
    return resnet_from_config(ResNetConfig.uniform((8, 16), (1, 1), (1, 2), **kw))


def _small() -> ResNet:
    """Four stages, small enough for every transform to run in a second."""
    torch.manual_seed(0)
    return resnet_from_config(ResNetConfig.uniform((16, 32, 64, 128), (2, 2, 2, 2), (1, 2, 2, 2)))


def _option_a() -> ResNet:
    """He et al.'s CIFAR ResNet shape: zero-padding (frozen) shortcuts."""
    stages = tuple(dataclasses.replace(s, shortcut="pad") for s in ResNetConfig.uniform((8, 16, 32), (1, 1, 1), (1, 2, 2)).stages)
    return resnet_from_config(ResNetConfig(stages=stages, stem_width=8))


def _correlated_images(n: int = 200, seed: int = 0) -> torch.Tensor:
    """uint8 NCHW images whose channels and neighbouring pixels are strongly correlated."""
    g = torch.Generator().manual_seed(seed)
    base = F.interpolate(torch.rand(n, 1, 8, 8, generator=g), size=(32, 32), mode="bilinear", align_corners=False)
    noise = torch.rand(n, 3, 32, 32, generator=g)
    x = torch.cat([base, 0.7 * base + 0.3 * noise[:, 1:2], 0.5 * base + 0.2 * noise[:, 2:3] + 0.1], 1)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def _normalised(images: torch.Tensor, mean, std) -> torch.Tensor:
    return (images.float() / 255 - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)


def _cov(y: torch.Tensor) -> torch.Tensor:
    """Covariance over every sample and position of an NCHW map's channels (float64)."""
    flat = y.permute(0, 2, 3, 1).reshape(-1, y.shape[1]).double()
    flat = flat - flat.mean(0)
    return flat.T @ flat / flat.shape[0]


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return _correlated_images()


# --- the layer whitens ------------------------------------------------------------------------------

@pytest.mark.parametrize("own_normalization", [False, True])
def test_the_layer_whitens_the_patches(images, own_normalization):
    base = _tiny()
    mean, std = CIFAR10_MEAN, CIFAR10_STD
    if own_normalization:  # a model carrying its normalisation is whitened for it, not for CIFAR-10's
        mean, std = (0.3, 0.4, 0.5), (0.1, 0.2, 0.3)
        base = with_normalization(base, mean, std)
    w = whiten_stem(base, images, eps=1e-8)
    z = _normalised(images, mean, std)
    patches = z.unfold(2, 2, 1).unfold(3, 2, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, 12).double()
    raw = torch.cov(patches.T)
    assert (raw - torch.diag(torch.diag(raw))).abs().max() > 0.5  # the input is far from white
    with torch.no_grad():
        linear = w.whiten(z)  # the conv alone, before the GELU
    assert linear.shape == (len(images), 24, 31, 31)
    cov = _cov(linear)
    assert torch.allclose(cov[:12, :12], torch.eye(12, dtype=torch.float64), atol=2e-3), cov[:12, :12]
    weight = w.whiten.weight
    assert torch.equal(weight[12:], -weight[:12])
    assert torch.allclose(cov[12:, 12:], cov[:12, :12])


def test_eps_damps_the_weak_directions(images):
    small = whiten_stem(_tiny(), images, eps=1e-8).whiten.weight
    large = whiten_stem(_tiny(), images, eps=1.0).whiten.weight
    assert large.flatten(1).norm(dim=1).max() < small.flatten(1).norm(dim=1).max()


def test_only_max_images_are_used(images):
    a = whiten_stem(_tiny(), images, max_images=50).whiten.weight
    b = whiten_stem(_tiny(), images[:50]).whiten.weight
    c = whiten_stem(_tiny(), images).whiten.weight
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_image_data_gives_its_training_split(images):
    data = compress.data.synthetic(64, 16)
    a = whiten_stem(_tiny(), data).whiten.weight
    b = whiten_stem(_tiny(), data.train_x).whiten.weight
    assert torch.equal(a, b)


@pytest.mark.parametrize("kernel, width, size", [(1, 6, 32), (2, 24, 31), (3, 54, 30)])
def test_kernel_sizes(images, kernel, width, size):
    w = whiten_stem(_tiny(), images, kernel=kernel)
    assert w.whiten.weight.shape == (width, 3, kernel, kernel) and w.conv1.in_channels == width
    assert w.config.whiten_kernel == kernel and w.config.whiten_width == width
    seen = {}
    w.conv1.register_forward_hook(lambda _m, _i, out: seen.update(stem=out.shape))
    assert w(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert seen["stem"][-2:] == (size, size)


# --- structure and counts ---------------------------------------------------------------------------

def test_resnet18_params_shape_and_input_untouched(r18, images):
    snap = snapshot(r18)
    w = compress.whiten_stem(r18, images)
    assert_unchanged(r18, snap)
    assert compress.count_params(w) == R18_WHITENED == 11_186_346
    assert compress.count_params(w) == compress.count_params(r18) + w.whiten.weight.numel() + (
        w.conv1.weight.numel() - r18.conv1.weight.numel())
    assert isinstance(w.whiten, WhiteningConv) and not w.whiten.weight.requires_grad and w.whiten.bias is None
    assert list(w.state_dict())[0] == "whiten.weight"
    w.eval()
    assert w(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    # every other weight is carried over; the stem conv is new (its input channels changed)
    ref = r18.state_dict()
    for k, v in w.state_dict().items():
        if k not in ("whiten.weight", "conv1.weight"):
            assert torch.equal(v, ref[k]), k
    assert w.conv1.weight.shape == (64, 24, 3, 3)


def test_flops_include_the_layer(images):
    w = whiten_stem(_tiny(), images)
    assert compress.flops_by_module(w, names=["whiten"]) == {"whiten": 24 * 12 * 31 * 31}
    parts = compress.flops_by_module(w, names=["whiten", "conv1", "bn1", "layer1", "layer2", "linear"])
    assert compress.count_flops(w) == sum(parts.values()) + 16 * 16 * 16  # and the head's mean pool of layer2's map


def test_config_records_it_and_is_unchanged_without_it(r18, images):
    assert "whiten_kernel" not in r18.config.to_dict()
    assert "whiten" not in r18.config.describe()
    assert r18.whiten is None
    w = whiten_stem(r18)
    d = w.config.to_dict()
    assert d["whiten_kernel"] == 2 and d["in_channels"] == 3
    assert ResNetConfig.from_dict(d) == w.config
    assert w.config.describe().startswith("whiten 24(k2, frozen) stem 64(k3) ")
    assert w.config_from_modules() == w.config.replace(stages=w.config_from_modules().stages)
    rebuilt = resnet_from_config(d)
    assert isinstance(rebuilt.whiten, WhiteningConv) and not rebuilt.whiten.weight.requires_grad
    assert compress.count_params(rebuilt) == R18_WHITENED
    with pytest.raises(ValueError, match="whiten_kernel"):
        r18.config.replace(whiten_kernel=-1)


@pytest.mark.parametrize("build", [
    lambda: _tiny(),
    lambda: compress.remove_stage(compress.scale_width(compress.resnet18(), 0.25), 3, fold_stride=True),
    lambda: _option_a(),
    lambda: compress.add_se(compress.set_kernels(_tiny(), (5, 3)), "blocks"),
])
def test_every_kind_of_resnet_runs_whitened(build, images):
    m = build()
    w = whiten_stem(m, images)
    assert compress.count_params(w) == compress.count_params(m) + 288 + m.conv1.out_channels * 21 * m.config.stem_kernel ** 2
    w.eval()
    assert w(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_summary_shows_the_layer(images):
    w = whiten_stem(_tiny(), images)
    table = compress.summary(w, print_table=False)
    parts = list(table.columns[0].cells)
    assert parts[:2] == ["whiten", "stem"]
    row = [list(c.cells)[0] for c in table.columns]
    assert row[1] == "24" and row[5] == "2x2" and row[-2] == "288" and row[-1] == "0.28"
    assert list(table.columns[-2].cells)[-1] == f"{compress.count_params(w):,}"
    assert "whiten" not in list(compress.summary(_tiny(), print_table=False).columns[0].cells)


# --- save/load and training --------------------------------------------------------------------------

def test_save_load_round_trip(images, tmp_path):
    w = whiten_stem(_tiny(), images).eval()
    path = compress.save(w, tmp_path / "w.pt")
    back = compress.load(path)
    assert back.config == w.config and back.config.whiten_kernel == 2
    assert isinstance(back.whiten, WhiteningConv) and not back.whiten.weight.requires_grad
    assert torch.equal(back.whiten.weight, w.whiten.weight)
    x = torch.randn(3, 3, 32, 32)
    assert torch.equal(back(x), w(x))
    assert compress.count_params(back) == compress.count_params(w)


def test_the_weights_are_frozen(images):
    w = whiten_stem(_tiny(), images).train()
    before = w.whiten.weight.clone()
    stem_before = w.conv1.weight.clone()
    opt = torch.optim.SGD([p for p in w.parameters() if p.requires_grad], lr=0.5, momentum=0.9, weight_decay=0.1)
    x, y = _normalised(images[:16], CIFAR10_MEAN, CIFAR10_STD), torch.arange(16) % 10
    F.cross_entropy(w(x), y).backward()
    opt.step()
    assert w.whiten.weight.grad is None
    assert torch.equal(w.whiten.weight, before)
    assert not torch.equal(w.conv1.weight, stem_before)  # the rest did train
    w.whiten.weight = nn.Parameter(before.clone())  # a weight assigned later is frozen too
    assert not w.whiten.weight.requires_grad


def test_the_trainer_leaves_the_weights_alone():
    from compress.training import TrainConfig, train

    data = compress.data.synthetic(48, 16)
    w = whiten_stem(_tiny(), data)
    before = w.whiten.weight.clone()
    cfg = TrainConfig.from_dict({"epochs": 1, "batch_size": 16, "amp": "none", "channels_last": False})
    result = train(w, data, cfg, epochs=1, max_steps_per_epoch=2, progress=False, device="cpu")
    assert torch.equal(result.model.whiten.weight.cpu(), before)
    assert not result.model.whiten.weight.requires_grad


def test_onnx_export(images, tmp_path):
    pytest.importorskip("onnxruntime")
    w = whiten_stem(_tiny(), images)
    result = compress.export(w, tmp_path / "w.onnx")
    assert result.max_abs_diff <= result.tolerance


# --- other transforms keep the layer ------------------------------------------------------------------

TRANSFORMS = {
    "remove_stage": lambda m: compress.remove_stage(m, 3),
    "remove_stage_0": lambda m: compress.remove_stage(m, 0, fold_stride=True),
    "insert_stage": lambda m: compress.insert_stage(m, 0, 16, 1),
    "scale_width_down": lambda m: compress.scale_width(m, 0.5),
    "scale_width_up": lambda m: compress.scale_width(m, [1.5, 1, 1, 1, 2]),
    "redistribute_blocks": lambda m: compress.redistribute_blocks(m, [1, 3, 1, 2]),
    "set_kernels": lambda m: compress.set_kernels(m, (5, 3)),
    "add_se_stem": lambda m: compress.add_se(m, "stem"),
    "add_se_blocks": lambda m: compress.add_se(m, "blocks", 4),
    "prune": lambda m: compress.prune(m, 0.5),
    "prune_global": lambda m: compress.prune(m, 0.3, ranking="global"),
    "prune_sequential": lambda m: compress.prune(m, {"conv1": 0.5, "layer2": 0.3}, mode="sequential"),
    "prune_trained": lambda m: compress.prune(m, compress.PruneConfig.trained(), ratios=0.4),
    "prune_taylor": lambda m: compress.prune(m, 0.25, importance="taylor",
                                             data=(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))),
}


@pytest.fixture(scope="module")
def whitened_small(images):
    return whiten_stem(_small(), images)


@pytest.mark.parametrize("name", TRANSFORMS)
def test_transforms_keep_the_layer(name, whitened_small):
    w = whitened_small
    snap = snapshot(w)
    out = TRANSFORMS[name](w)
    assert_unchanged(w, snap)
    assert isinstance(out, ResNet) and out.config.whiten_kernel == 2
    assert isinstance(out.whiten, WhiteningConv) and not out.whiten.weight.requires_grad
    assert torch.equal(out.whiten.weight, w.whiten.weight)
    assert out.conv1.in_channels == 24  # the stem conv keeps its inputs
    assert compress.ResNet(out.config).whiten.weight.shape == (24, 3, 2, 2)
    out.eval()
    assert out(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert compress.count_params(out) == compress.count_params(compress.ResNet(out.config))


@pytest.mark.parametrize("what", ["params", "flops"])
def test_prune_to_a_budget_hits_it(what, whitened_small):
    w = whitened_small
    count = compress.count_params if what == "params" else compress.count_flops
    target = count(w) // 2
    out = compress.prune(w, **{f"target_{what}": target})
    got = count(out)
    assert got <= target and got > 0.95 * target
    assert torch.equal(out.whiten.weight, w.whiten.weight) and out.conv1.in_channels == 24
    # the count includes the frozen whitening filters
    assert compress.count_params(out) == 288 + sum(p.numel() for p in out.parameters() if p.requires_grad)


def test_prune_never_offers_the_layer(whitened_small):
    layers = compress.transforms.prunable_layers(whitened_small)
    assert "whiten" not in layers and "conv1" in layers
    with pytest.raises(ValueError, match="'whiten' matches no prunable layer") as e:
        compress.prune(whitened_small, {"whiten": 0.5})
    assert "\n" not in str(e.value)


# --- bad inputs -----------------------------------------------------------------------------------------

BAD = [
    (lambda m, x: whiten_stem(nn.Linear(3, 3), x), TypeError, "compress ResNets"),
    (lambda m, x: whiten_stem(whiten_stem(m), x), ValueError, "already has a 2x2 whitening layer"),
    (lambda m, x: whiten_stem(m, x.float()), TypeError, "must be uint8"),
    (lambda m, x: whiten_stem(m, x.tolist()), TypeError, "uint8 NCHW tensor"),
    (lambda m, x: whiten_stem(m, x[0]), ValueError, "4-d NCHW"),
    (lambda m, x: whiten_stem(m, x[:, :1]), ValueError, "1 channels"),
    (lambda m, x: whiten_stem(m, x.permute(0, 2, 3, 1)), ValueError, "32 channels"),
    (lambda m, x: whiten_stem(m, x[:0]), ValueError, "no images"),
    (lambda m, x: whiten_stem(m, x[:, :, :2, :2], kernel=3), ValueError, "smaller than the 3x3 patches"),
    (lambda m, x: whiten_stem(m, x, kernel=0), ValueError, "kernel must be a positive integer"),
    (lambda m, x: whiten_stem(m, x, kernel=1.5), ValueError, "kernel must be a positive integer"),
    (lambda m, x: whiten_stem(m, x, kernel=True), ValueError, "kernel must be a positive integer"),
    (lambda m, x: whiten_stem(m, x, eps=0), ValueError, "eps must be a positive number"),
    (lambda m, x: whiten_stem(m, x, eps=-1e-3), ValueError, "eps must be a positive number"),
    (lambda m, x: whiten_stem(m, x, eps=float("nan")), ValueError, "eps must be a positive number"),
    (lambda m, x: whiten_stem(m, x, max_images=0), ValueError, "max_images must be a positive integer"),
    (lambda m, x: init_whitening(m, x), ValueError, "has no whitening layer"),
    (lambda m, x: init_whitening(nn.Linear(3, 3), x), TypeError, "compress ResNets"),
    (lambda m, x: init_whitening(whiten_stem(m), x, normalization=((0.5,), (0.5,))), ValueError, "normalization"),
]


@pytest.mark.parametrize("case", range(len(BAD)))
def test_bad_inputs_give_one_line_errors(case, images):
    call, kind, message = BAD[case]
    m = _tiny()
    snap = snapshot(m)
    with pytest.raises(kind, match=message) as e:
        call(m, images)
    assert "\n" not in str(e.value)
    assert_unchanged(m, snap)


# --- recipes and init_whitening -------------------------------------------------------------------------

def _recipe(steps: list) -> recipes.Recipe:
    return recipes.from_mapping({
        "name": "whitened", "source": "a test", "model": steps,
        "train": {"epochs": 1, "batch_size": 16, "amp": "none", "channels_last": False},
        "claims": {"params": R18_WHITENED},
    })


def test_a_recipe_step_builds_the_structure_without_data():
    r = _recipe([{"whiten_stem": {"kernel": 2}}])
    assert r.model == (("whiten_stem", {"kernel": 2}),)
    m = r.build()
    assert compress.count_params(m) == R18_WHITENED == r.claims.params
    eye = torch.eye(12).view(12, 3, 2, 2)
    assert torch.equal(m.whiten.weight, torch.cat([eye, -eye]))  # the placeholder: each patch element, negated
    assert r.fingerprint() != _recipe([]).fingerprint()
    with pytest.raises(recipes.RecipeError, match="unknown argument 'kernal'; accepted arguments: images, kernel, eps"):
        _recipe([{"whiten_stem": {"kernal": 2}}])


def test_init_whitening_computes_what_whiten_stem_does(images):
    placeholder = whiten_stem(_tiny())
    snap = snapshot(placeholder)
    done = init_whitening(placeholder, images)
    assert_unchanged(placeholder, snap)
    direct = whiten_stem(_tiny(), images)
    assert torch.equal(done.whiten.weight, direct.whiten.weight)
    assert not done.whiten.weight.requires_grad
    for k, v in placeholder.state_dict().items():  # the rest is copied
        if k != "whiten.weight":
            assert torch.equal(done.state_dict()[k], v)
    own = init_whitening(placeholder, images, normalization=((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)))
    expected = whitening_weights(images, 2, mean=(0.5,) * 3, std=(0.25,) * 3)
    assert torch.equal(own.whiten.weight, expected)


def test_bench_initialises_the_whitening_before_training(tmp_path, monkeypatch):
    from compress import bench, training

    path = tmp_path / "whitened.yaml"
    path.write_text(
        "name: whitened\nsource: a test\nmodel:\n  - remove_stage: {index: 3}\n  - scale_width: {factor: 0.0625}\n"
        "  - redistribute_blocks: {blocks: [1, 1, 1]}\n  - whiten_stem: {kernel: 2}\n"
        "train: {epochs: 1, batch_size: 16, amp: none, channels_last: false}\n"
        "claims: {params: 1, accuracy: 50.0, accuracy_basis: made up}\n"
        "fast: {epochs: 1, batch_size: 16, amp: none, channels_last: false}\n")
    seen = {}
    real_train = training.train

    def spy(model, *args, **kwargs):
        seen["weight"] = model.whiten.weight.detach().clone()
        return real_train(model, *args, **kwargs)

    monkeypatch.setattr(training, "train", spy)
    data = bench.resolve_data("synthetic:32:8")
    rows = bench.run([recipes.load(path)], tmp_path / "run", data, epochs=1, max_steps_per_epoch=1, device="cpu",
                     progress=False, log=lambda s: None)
    assert rows[0]["params"] == compress.count_params(recipes.load(path).build())
    assert torch.equal(seen["weight"], whitening_weights(data.train_x, 2, mean=CIFAR10_MEAN, std=CIFAR10_STD))
