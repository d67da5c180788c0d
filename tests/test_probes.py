"""The bias probes (vitlab.analysis.probes): each perturbation checked against a known answer,
and each accuracy probe against models whose response to it is known by construction."""

import pytest
import torch
from torch import nn

from vitlab.analysis.probes import (
    cka_matrix,
    layer_names,
    linear_cka,
    occlude,
    occlusion_accuracy,
    shift_accuracy,
    shuffle_accuracy,
    shuffle_patches,
    translate,
)
from vitlab.models.cnn import cnn
from vitlab.models.mlp import MLP
from vitlab.models.vit import VisionTransformer


class Brightest(nn.Module):
    """Class = the channel with the largest sum: blind to where anything is."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return x.sum((-2, -1)) * self.scale


class Centre(nn.Module):
    """Class = the channel that is largest at pixel (8, 8): all position."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return x[..., 8, 8] * self.scale


def blobs(n=12, size=16, channels=3):
    """n images, each one positive 4x4 blob in the channel that is its label, at the centre."""
    y = torch.arange(n) % channels
    x = torch.zeros(n, channels, size, size)
    x[torch.arange(n), y, 6:10, 6:10] = 1.0
    return [(x[:6], y[:6]), (x[6:], y[6:])]


def test_translate_moves_every_pixel_and_fills_with_zero():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    moved = translate(x, 1, 2)  # right 1, down 2
    assert torch.equal(moved[0, 0, 2:, 1:], x[0, 0, :2, :3])
    assert moved[0, 0, :2].abs().sum() == 0 and moved[0, 0, :, 0].abs().sum() == 0
    assert torch.equal(translate(translate(x, -1, 0), 1, 0)[..., 1:], x[..., 1:])
    assert torch.equal(translate(x, 0, 0), x)


def test_shift_probe_separates_a_position_blind_model_from_a_position_reader():
    batches = blobs()
    assert shift_accuracy(Brightest(), batches, (0, 2, 8)) == {0: 1.0, 2: 1.0, 8: 1.0}
    centre = shift_accuracy(Centre(), batches, (0, 8))
    assert centre[0] == 1.0 and centre[8] < 0.5  # moved 8 px off (8, 8): the model sees nothing


def test_shuffle_permutes_whole_cells_and_inverts():
    x = torch.arange(2 * 8 * 8.0).reshape(1, 2, 8, 8)
    perm = torch.tensor([3, 0, 2, 1])
    out = shuffle_patches(x, 2, perm)
    cells = lambda t: [t[..., r * 4:(r + 1) * 4, c * 4:(c + 1) * 4] for r in range(2) for c in range(2)]  # noqa: E731
    for i, cell in enumerate(cells(out)):
        assert torch.equal(cell, cells(x)[perm[i]])
    assert torch.equal(shuffle_patches(out, 2, perm.argsort()), x)
    assert torch.equal(shuffle_patches(x, 1, torch.tensor([0])), x)
    with pytest.raises(ValueError, match="does not divide"):
        shuffle_patches(x, 3, torch.arange(9))


def test_shuffle_probe_leaves_a_position_blind_model_alone():
    batches = blobs()
    assert shuffle_accuracy(Brightest(), batches, (1, 2, 4)) == {1: 1.0, 2: 1.0, 4: 1.0}
    centre = shuffle_accuracy(Centre(), batches, (1, 2))
    assert centre[1] == 1.0 and centre[2] < 0.5  # the blob's four quarters leave the centre


def test_occlusion_zeroes_exactly_the_asked_fraction_of_cells():
    x = torch.ones(5, 3, 16, 16)
    out = occlude(x, 0.25, 4, torch.Generator().manual_seed(0))
    cells = out[:, 0].reshape(5, 4, 4, 4, 4).sum((2, 4))  # per image: 4x4 cells
    assert ((cells == 0).sum((1, 2)) == 4).all() and ((cells == 16).sum((1, 2)) == 12).all()
    assert torch.equal(out[:, 0], out[:, 2])  # the same cells in every channel
    assert torch.equal(occlude(x, 0.0, 4, torch.Generator()), x)
    assert occlude(x, 1.0, 4, torch.Generator()).abs().sum() == 0


def test_occlusion_probe_is_exact_at_the_ends():
    acc = occlusion_accuracy(Brightest(), blobs(), (0.0, 1.0), patch=4)
    assert acc[0.0] == 1.0 and acc[1.0] == pytest.approx(1 / 3, abs=0.1)  # all blank: class 0 by argmax ties


def test_linear_cka_known_answers():
    torch.manual_seed(0)
    x = torch.randn(64, 10)
    q, _ = torch.linalg.qr(torch.randn(10, 10))
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, 3 * x @ q + 5) == pytest.approx(1.0)  # rotation, scale, shift
    assert linear_cka(x, torch.randn(64, 10)) < 0.35
    # the closed form for centred features, |Y^T X|_F^2 / (|X^T X|_F |Y^T Y|_F)
    y = torch.randn(64, 7)
    xc, yc = (x - x.mean(0)).double(), (y - y.mean(0)).double()
    expected = (yc.T @ xc).norm() ** 2 / ((xc.T @ xc).norm() * (yc.T @ yc).norm())
    assert linear_cka(x, y) == pytest.approx(expected.item())


@pytest.mark.parametrize("make, names", [
    (lambda: MLP(16, 3, 3, hidden_dims=(8, 8)), ["layers.0", "layers.1"]),
    (lambda: VisionTransformer(16, 4, 3, 3, embed_dim=16, depth=2, num_heads=2),
     ["embed", "blocks.0", "blocks.1"]),
    (lambda: cnn("resnet10t", img_size=16, num_classes=3), ["act1", "layer1", "layer2", "layer3", "layer4"]),
])
def test_cka_matrix_covers_every_models_layers_symmetric_with_unit_diagonal(make, names):
    torch.manual_seed(0)
    model = make().eval()
    assert layer_names(model) == names
    batches = [(torch.randn(10, 3, 16, 16), torch.zeros(10, dtype=torch.long)) for _ in range(2)]
    got, matrix = cka_matrix(model, batches, max_images=16)
    m = torch.tensor(matrix)
    assert got == names and m.shape == (len(names), len(names))
    torch.testing.assert_close(m.diagonal(), torch.ones(len(names), dtype=m.dtype))
    torch.testing.assert_close(m, m.T)
    assert ((m > 0) & (m <= 1 + 1e-6)).all()
    assert not any(module._forward_hooks for module in model.modules())  # hooks removed


def test_run_probes_returns_every_asked_probe_and_records_what_the_model_cannot_run():
    from omegaconf import OmegaConf

    from vitlab.analysis.probes.run import check_sizes, run_probes
    from vitlab.data.eval_images import first_images
    from vitlab.errors import ConfigError

    batches = first_images(blobs(), 8, batch_size=3)
    assert [len(y) for _, y in batches] == [3, 3, 2]
    probes = OmegaConf.create(dict(shift=[0, 8], shift_circular=False, shuffle=[1], occlusion=[],
                                   occlusion_patch=4, cka=True))
    # moved off the centre pixel every image scores 0 everywhere: argmax says class 0, 3 of the 8
    # labels; Centre has no layers to compare, so CKA is skipped with its reason, not raised
    assert run_probes(Centre(), batches, probes) == {
        "shift": {"0": 1.0, "8": 0.375}, "shuffle": {"1": 1.0},
        "skipped": {"cka": "ValueError: no layers to compare in Centre: give the module names"}}
    with pytest.raises(ConfigError, match=r"^probes.shuffle: a 3x3 grid does not divide the 16x16 image"):
        check_sizes(OmegaConf.create(dict(shuffle=[3])), (16, 16))


def test_circular_shift_wraps_and_a_circular_cnn_with_global_pooling_is_exactly_invariant():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert torch.equal(translate(x, 1, 0, circular=True)[..., 0], x[..., 3])
    assert torch.equal(translate(translate(x, 3, -2, circular=True), -3, 2, circular=True), x)
    torch.manual_seed(0)
    # total stride 4: circular shifts by multiples of 4 permute the feature map, which pooling forgets
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, padding_mode="circular"), nn.ReLU(),
                          nn.Conv2d(8, 8, 4, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 3)).eval()
    images = torch.randn(12, 3, 16, 16)
    labels = model(images).argmax(-1)
    batches = [(images, labels)]
    assert shift_accuracy(model, batches, (0, 4, 8), circular=True) == {0: 1.0, 4: 1.0, 8: 1.0}
    # a position reader: a whole turn (16 of 16 pixels) brings the blob back, zero padding loses it
    centre = shift_accuracy(Centre(), blobs(), (4, 16), circular=True)
    assert centre[16] == 1.0 and centre[4] < 1.0 and shift_accuracy(Centre(), blobs(), (16,))[16] < 1.0


def test_shift_consistency_is_one_for_a_position_blind_model_and_less_for_a_position_reader():
    from vitlab.analysis.probes.shift import shift_consistency

    assert shift_consistency(Brightest(), blobs(), max_shift=4, pairs=4) == 1.0  # the blob stays inside
    assert shift_consistency(Centre(), blobs(), max_shift=4, pairs=8) < 1.0


def test_cka_of_a_model_against_itself_is_its_own_self_cka_and_a_hybrid_shows_its_stem():
    from functools import partial

    from vitlab.analysis.probes.cka import cross_cka_matrix
    from vitlab.models import HybridEmbed

    torch.manual_seed(0)
    model = VisionTransformer(16, 1, 3, 3, embed_dim=16, depth=2, num_heads=2,
                              embed=partial(HybridEmbed, backbone="resnet10t", out_index=2)).eval()
    names = layer_names(model)
    assert names == ["embed.backbone.act1", "embed.backbone.layer1", "embed.backbone.layer2", "embed",
                     "blocks.0", "blocks.1"]
    batches = [(torch.randn(16, 3, 16, 16), torch.zeros(16, dtype=torch.long))]
    rows, cols, cross = cross_cka_matrix(model, model, batches, max_images=16)
    _, own = cka_matrix(model, batches, max_images=16)
    assert rows == cols == names
    torch.testing.assert_close(torch.tensor(cross), torch.tensor(own))
    torch.testing.assert_close(torch.tensor(cross).diagonal(), torch.ones(len(names)))
    mlp = MLP(16, 3, 3, hidden_dims=(8, 8)).eval()
    rows, cols, cross = cross_cka_matrix(model, mlp, batches, max_images=16)
    assert cols == ["layers.0", "layers.1"] and torch.tensor(cross).shape == (6, 2)


@pytest.mark.slow
def test_probe_command_runs_on_a_trained_run_folder(tmp_path):
    import json

    from conftest import run_entry

    train = run_entry("train.py", ["model=mlp", "trainer.max_epochs=1", "+trainer.limit_train_batches=4",
                                   "trainer.enable_progress_bar=false", f"hydra.run.dir={tmp_path / 'run'}"],
                      cwd=tmp_path)
    assert train.returncode == 0, train.stderr[-3000:]
    result = run_entry("probe.py", [f"ckpt_path={tmp_path / 'run'}", "probes.images=64",
                                    f"hydra.run.dir={tmp_path / 'probe'}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "probe" / "summary.json").read_text())
    trained = json.loads((tmp_path / "run" / "summary.json").read_text())
    test_acc = trained["test"]["test/acc"]
    probes = summary["probes"]
    asked = {"shift", "shift_circular", "shift_consistency", "shuffle", "occlusion", "cka"}
    assert summary["images"] == 64 and set(probes) == asked | {"fill"} and probes["fill"] == "black"
    # the training run probed its best checkpoint itself, in the same layout, and timed it
    assert trained["status"] == "completed" and set(trained["probes"]) == asked | {"fill"}
    assert trained["probe_images"] == 256 and 0 < trained["probe_time_s"] and 0 < trained["fit_time_s"]
    # unperturbed, the probes see what the test saw (on the first 64 of its images)
    assert probes["shift"]["0"] == probes["shuffle"]["1"] == probes["occlusion"]["0.0"]
    assert abs(probes["shift"]["0"] - test_acc) < 0.2
    assert probes["cka"]["layers"] == ["layers.0", "layers.1"]
    against = run_entry("probe.py", [f"ckpt_path={tmp_path / 'run'}",
                                     f"probes.cka_against={tmp_path / 'run'}",
                                     "probes.images=32", "probes.cka_images=32", "probes.shift=[]",
                                     "probes.shuffle=[]", "probes.occlusion=[]", "probes.consistency_shift=0",
                                     f"hydra.run.dir={tmp_path / 'against'}"], cwd=tmp_path)
    assert against.returncode == 0, against.stderr[-3000:]
    between = json.loads((tmp_path / "against" / "summary.json").read_text())["probes"]["cka_between"]
    # a run against itself: its own self-CKA matrix, 1 on the diagonal
    assert between["layers"] == between["other_layers"] == ["layers.0", "layers.1"]
    assert [between["matrix"][i][i] for i in range(2)] == [1.0, 1.0]
    bad = run_entry("probe.py", [f"ckpt_path={tmp_path / 'run'}", "probes.occlusion_patch=5",
                                 f"hydra.run.dir={tmp_path / 'bad'}"], cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1] == \
        "error: probes.occlusion_patch=5 does not divide the 32x32 image"


@pytest.mark.slow
def test_a_probe_error_after_training_is_recorded_and_the_run_stays_completed(tmp_path, monkeypatch):
    from conftest import compose_config

    import vitlab.training.train
    from vitlab.runs.summary import read_summary

    def broken(*_args, **_kw):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(vitlab.training.train, "probe_summary", broken)
    cfg = compose_config(["model=mlp", "trainer.max_epochs=1", "+trainer.limit_train_batches=2",
                          "trainer.enable_progress_bar=false"], output_dir=tmp_path)
    vitlab.training.train.train(cfg)
    summary = read_summary(tmp_path)
    assert summary["status"] == "completed" and summary["test"]["test/acc"] > 0
    assert summary["probes"] == {"skipped": {"all": "RuntimeError: out of memory"}}


def test_probe_grids_that_do_not_tile_the_image_stop_a_training_run_before_it_starts(compose_cfg):
    from omegaconf import OmegaConf

    from vitlab.errors import ConfigError
    from vitlab.training.train import probes_wanted

    cfg = compose_cfg()  # one composition, changed below: composing is the slow part
    assert probes_wanted(cfg)
    assert not probes_wanted(OmegaConf.merge(cfg, {"probes": {"enabled": False}}))
    assert not probes_wanted(OmegaConf.merge(cfg, {"test": False, "probes": {"shuffle": [3]}}))
    with pytest.raises(ConfigError, match=r"^probes.shuffle: a 3x3 grid does not divide the 32x32 image$"):
        probes_wanted(OmegaConf.merge(cfg, {"probes": {"shuffle": [3]}}))


def test_probe_images_spread_over_a_class_ordered_split_and_read_only_those():
    """An image folder's test split is in class order: the probes take images evenly spaced over
    it (every class), and through a DataLoader read only those images."""
    from torch.utils.data import DataLoader, Dataset

    from vitlab.analysis.probes.run import probe_images

    class Ordered(Dataset):  # 5 classes x 20 images, class by class, counting its reads
        reads = 0

        def __len__(self):
            return 100

        def __getitem__(self, i):
            Ordered.reads += 1
            return torch.full((1, 4, 4), float(i)), i // 20

    batches = probe_images(DataLoader(Ordered(), batch_size=8), 10, batch_size=4)
    labels = torch.cat([y for _, y in batches])
    assert [len(y) for _, y in batches] == [4, 4, 2] and sorted(set(labels.tolist())) == [0, 1, 2, 3, 4]
    assert Ordered.reads == 10
    # a loader without a dataset (the on-device one): read whole, then spaced alike
    on_device = [(torch.arange(i, i + 10.0).view(10, 1, 1, 1), torch.arange(i, i + 10) // 20)
                 for i in range(0, 100, 10)]
    spread = torch.cat([y for _, y in probe_images(on_device, 10)])
    assert torch.equal(spread, labels)


# ---- what a shift moves in: the image's own background, in pixel space


def test_a_shift_of_a_black_background_digit_leaves_no_seam():
    from vitlab.analysis.probes.shift import black, translate

    mean, std = [0.305], [0.324]  # the digits' normalisation
    dark = black(mean, std)
    x = dark.view(1, 1, 1, 1).expand(2, 1, 16, 16).clone()
    x[:, :, 6:10, 6:10] = 2.0  # a bright stroke on black
    moved = translate(x, 3, -2, fill=dark)
    assert torch.equal(moved[:, :, :, :3], dark.expand(2, 1, 16, 3))  # black came in, not grey
    assert torch.equal(moved[:, :, 4:8, 9:13], x[:, :, 6:10, 6:10])  # the stroke moved 3 right, 2 up
    # the same pixel values, only rearranged: no seam of another value
    assert torch.equal(moved.flatten().sort().values, x.flatten().sort().values)
    assert not torch.equal(translate(x, 3, -2), moved)  # the normalised 0 (grey) would be a seam


@pytest.mark.parametrize("fill", ["black", "edge"])
def test_a_shift_equals_a_crop_of_the_padded_canvas(fill):
    from vitlab.analysis.probes.shift import black, canvas_crop, translate

    x = torch.randn(2, 3, 12, 12)
    value = "edge" if fill == "edge" else black([0.5, 0.4, 0.3], [0.2, 0.2, 0.2])
    for dx, dy in [(0, 0), (4, 0), (-4, 3), (2, -4), (-1, -1)]:
        assert torch.equal(translate(x, dx, dy, fill=value), canvas_crop(x, 4, dx, dy, value)), (dx, dy)
    edge = translate(x, 2, 0, fill="edge")
    assert torch.equal(edge[..., 0], x[..., 0]) and torch.equal(edge[..., 1], x[..., 0])


def test_occlusion_and_shifts_fill_black_in_pixel_space_and_the_summary_says_so():
    from omegaconf import OmegaConf

    from vitlab.analysis.probes.occlusion import occlude
    from vitlab.analysis.probes.run import check_sizes, run_probes
    from vitlab.analysis.probes.shift import black
    from vitlab.errors import ConfigError

    dark = black([0.5], [0.25])  # pixel 0 is -2 once normalised
    out = occlude(torch.ones(1, 1, 8, 8), 1.0, 4, torch.Generator().manual_seed(0), dark)
    assert torch.equal(out, torch.full((1, 1, 8, 8), -2.0))
    probes = OmegaConf.create(dict(shift=[0, 2], shift_circular=False, occlusion=[0.5], occlusion_patch=4))
    batches = [(torch.zeros(4, 1, 8, 8), torch.zeros(4, dtype=torch.long))]
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    assert run_probes(model, batches, probes, [0.5], [0.25])["fill"] == "black"
    with pytest.raises(ConfigError, match=r"^probes.fill='grey': use black, edge, mean$"):
        check_sizes(OmegaConf.create(dict(fill="grey")), (8, 8))
