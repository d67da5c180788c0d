"""Performance plumbing: FLOP counts, the benchmark entry point, the on-device loader, the
throughput callback, compile without graph breaks. No test here times anything."""

from __future__ import annotations

import csv
import ctypes
import functools
import json
import os
from types import SimpleNamespace

import pytest
import torch
import torch._dynamo
from conftest import compose_config, run_entry
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.data import Subset
from torch.utils.flop_counter import FlopCounterMode
from torchvision.transforms import v2

from vitlab.bench.fit import StepTimer
from vitlab.data.datasets.digits import TensorImages
from vitlab.data.device_augment import CropFlip, DeviceAugment, crop_flip, device_augment
from vitlab.data.on_device import DeviceLoader, as_uint8
from vitlab.errors import ConfigError
from vitlab.flops import forward_flops, matmul_macs, peak_tflops, vit_macs
from vitlab.models import HybridEmbed, VisionTransformer
from vitlab.models.pos_embed import Learned1d, Relative, RelativeBias, Rope2d
from vitlab.runs.build_model import build_model
from vitlab.training.train import NVML_CHECK, fast_path, skip_failing_nvml_probe, train


@pytest.mark.parametrize("preset,gmacs", [("vit_tiny", 1.26), ("vit_small", 4.61), ("vit_base", 17.58)])
def test_forward_macs_equal_the_published_counts_at_224(preset, gmacs, monkeypatch):
    monkeypatch.setattr(torch.nn.init, "trunc_normal_", lambda t, *a, **k: t)  # counts only
    cfg = compose_config([f"model={preset}", "data.num_classes=1000", "data.img_size=224",
                          "data.in_chans=3"])
    model = build_model(cfg.model)
    # the published figures (fvcore) count LayerNorm too; MFU counts the matmuls only
    assert round(sum(vit_macs(model).values()) / 1e9, 2) == gmacs
    assert matmul_macs(model) == pytest.approx(gmacs * 1e9, rel=6e-3)  # LayerNorm: < 0.4 %


TINY = dict(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, num_classes=5)


@pytest.mark.parametrize("name,kwargs", [
    ("learned_1d", {}),
    ("relative", {"pos_embed": Relative}),  # Shaw keys: one more N²·D product per block
    ("mean_pool", {"pool": "mean"}),
    ("hybrid", {"patch_size": 1, "img_size": 32,
                "embed": functools.partial(HybridEmbed, backbone="resnet18", out_index=2)}),
])
def test_analytic_count_equals_torch_flop_counter_on_the_unfused_attention_path(name, kwargs):
    model = VisionTransformer(**{**TINY, **kwargs}).eval()
    size = kwargs.get("img_size", TINY["img_size"])
    # the math backend spells attention out as matmuls, which FlopCounterMode sees
    with FlopCounterMode(display=False) as counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        model(torch.randn(1, 3, size, size))
    assert forward_flops(model, size) == counter.get_total_flops()


def test_peak_table_and_override(monkeypatch):
    assert peak_tflops("cpu", "32")[0] is None  # MFU only where the peak is known
    assert peak_tflops("cpu", "32", cpu_estimate=True)[0] > 0
    monkeypatch.setenv("VITLAB_PEAK_TFLOPS", "123")
    assert peak_tflops("cpu", "bf16")[0] == 123.0


@pytest.mark.parametrize("preset", ["vit_micro", "vit_hybrid"])
def test_bench_runs_end_to_end_against_timm(preset, tmp_path):
    out = tmp_path / "bench.json"
    result = run_entry("bench.py", [f"model={preset}", "batch_size=2", "warmup=1", "rounds=2",
                                    "steps=1", f"out={out}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "train ratio vitlab/timm" in result.stdout and "infer ratio vitlab/timm" in result.stdout
    r = json.loads(out.read_text())
    assert r["img_size"] == 32 and r["device"] == "cpu"
    assert r["parameters"]["vitlab"] == r["parameters"]["timm"]  # the same configuration
    for phase in ("train", "infer"):
        assert r[phase]["ratio"] > 0 and len(r[phase]["vitlab"]["rounds_ms"]) == 2
        assert r[phase]["timm"]["tflops"] > 0 and r[phase]["vitlab"]["mfu"] > 0
    assert not list(tmp_path.glob("outputs")), "a benchmark writes no run folder"


def test_bench_fit_times_vitlab_against_a_bare_loop(tmp_path):
    out = tmp_path / "fit.json"
    result = run_entry("bench.py", ["mode=fit", "model=vit_micro", "batch_size=8", "warmup=1", "rounds=2",
                                    "steps=2", f"out={out}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "fit ratio vitlab/bare" in result.stdout
    r = json.loads(out.read_text())
    assert r["vitlab"]["images_per_s"] > 0 and r["bare"]["images_per_s"] > 0 and r["ratio"] > 0
    assert len(r["vitlab"]["rounds_ms"]) == len(r["bare"]["rounds_ms"]) == 2
    assert not list(tmp_path.glob("outputs")) and not list(tmp_path.glob("checkpoints"))


def test_the_bench_step_timer_counts_steps_across_epochs():
    # the digits' epoch is 45 batches of 32: steps=100 used to end with no time at all
    timer = StepTimer(warmup=2, steps=5)
    trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cpu")))
    for batch_idx in [0, 1, 2, 0, 1, 2, 0]:  # three epochs of three batches
        assert timer.seconds is None
        timer.on_train_batch_end(trainer, None, None, None, batch_idx)
    assert timer.seconds is not None and timer.seconds >= 0


@pytest.mark.slow
def test_bench_path_times_every_data_path_of_the_default_run_against_a_bare_loop(tmp_path):
    out = tmp_path / "path.json"
    result = run_entry("bench.py", ["mode=path", "warmup=1", "rounds=1", "steps=2", "path_workers=1",
                                    f"out={out}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    r = json.loads(out.read_text())
    assert list(r["paths"]) == ["loader", "workers", "device", "streaming"]
    for name, row in r["paths"].items():
        assert row["vitlab"]["images_per_s"] > 0 < row["bare"]["images_per_s"] and row["ratio"] > 0, name
        assert f"\n{name} " in result.stdout  # one line per path in the printed table
    assert r["paths"]["device"]["overrides"] == ["data.on_device=true"]
    assert not list(tmp_path.glob("outputs")) and not list(tmp_path.glob("checkpoints"))


# ---- on-device loader


def _images(n=40, size=8, chans=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 256, (n, chans, size, size), generator=g, dtype=torch.uint8),
            torch.arange(n) % 4)


def test_device_batches_equal_the_dataloader_transform_without_augmentation():
    images, labels = _images()
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    loader = DeviceLoader(images, labels, batch_size=16, mean=mean, std=std)
    batches = list(loader)
    assert len(loader) == len(batches) == 3 and [len(y) for _, y in batches] == [16, 16, 8]
    x, y = batches[0]
    assert x.shape == (16, 3, 8, 8) and x.dtype == torch.float32 and x.is_contiguous()
    assert y.dtype == torch.int64
    expected = v2.Normalize(mean, std)(images[:16].float() / 255)
    torch.testing.assert_close(x, expected, atol=1e-5, rtol=0)
    assert torch.equal(y, labels[:16])


def test_crop_flip_is_torchvision_crop_of_the_padded_image_then_flip():
    images, _ = _images(n=6)
    top, left = torch.tensor([0, 8, 3, 4, 1, 7]), torch.tensor([8, 0, 5, 4, 2, 6])
    flip = torch.tensor([False, True, False, True, True, False])
    out = crop_flip(images, top, left, flip, padding=4)
    for i in range(6):
        ref = v2.functional.crop(v2.functional.pad(images[i], [4]), int(top[i]), int(left[i]), 8, 8)
        assert torch.equal(out[i], ref.flip(-1) if flip[i] else ref)
    assert torch.equal(crop_flip(images, top, left, flip, padding=0)[1], images[1].flip(-1))


def test_augmentation_varies_and_epochs_reshuffle_reproducibly():
    images, _ = _images(n=64)
    ids = torch.arange(64)  # labels as image ids, to follow the order
    norm = dict(mean=[0.5] * 3, std=[0.5] * 3)

    def loader(seed, shuffle=True, **aug):
        return DeviceLoader(images, ids, batch_size=64, shuffle=shuffle, seed=seed, **norm, **aug)

    a = loader(0)
    (xa0, ya0), (_, ya1) = next(iter(a)), next(iter(a))  # epochs 0 and 1
    xb0, yb0 = next(iter(loader(0)))
    assert torch.equal(xa0, xb0) and torch.equal(ya0, yb0)  # seeded: reproducible
    assert not torch.equal(ya0, ya1)  # a new order every epoch
    assert sorted(ya0.tolist()) == list(range(64))  # a permutation: every image once
    assert not torch.equal(next(iter(loader(1)))[1], ya0)  # another seed, another order

    plain, _ = next(iter(loader(0, shuffle=False)))
    augmented = loader(0, shuffle=False, augment=DeviceAugment([CropFlip(padding=2), CropFlip(flip=0.5)]))
    e0, e1 = next(iter(augmented))[0], next(iter(augmented))[0]
    changed = [not torch.equal(e0[i], plain[i]) for i in range(64)]
    assert sum(changed) > 48  # crops and flips change most images ...
    assert sum(not torch.equal(e0[i], e1[i]) for i in range(64)) > 48  # ... differently each epoch


def test_ddp_shards_split_the_global_batches_of_one_process_image_for_image():
    """2 ranks of batch 8 train on the 1-process run's batches of 16, augmented alike: rank r
    holds the r-th half of each (the last, partial one shared as evenly as they allow)."""
    images, _ = _images(n=41)
    aug = DeviceAugment([CropFlip(padding=2), CropFlip(flip=0.5)])

    def loader(batch, rank=0, world=1):
        return DeviceLoader(images, torch.arange(41), batch, [0.5] * 3, [0.5] * 3, shuffle=True,
                            seed=3, augment=aug, rank=rank, world_size=world)

    one = list(loader(16))
    shards = [list(loader(8, r, 2)) for r in range(2)]
    assert len(one) == len(shards[0]) == len(shards[1]) == 3
    for j, (x, y) in enumerate(one):
        assert torch.equal(torch.cat([shards[0][j][1], shards[1][j][1]]), y)  # the same images
        assert torch.equal(torch.cat([shards[0][j][0], shards[1][j][0]]), x)  # the same pixels
    assert [len(shards[r][2][1]) for r in range(2)] == [5, 4]


def test_a_resumed_device_epoch_continues_at_its_batch_with_the_same_pixels():
    images, _ = _images(n=40)
    aug = DeviceAugment([CropFlip(padding=2), CropFlip(flip=0.5)])
    full = list(DeviceLoader(images, torch.arange(40), 4, [0.5] * 3, [0.5] * 3, shuffle=True,
                             seed=3, augment=aug, chunk_batches=3))
    resumed = list(DeviceLoader(images, torch.arange(40), 4, [0.5] * 3, [0.5] * 3, shuffle=True,
                                seed=3, augment=aug, chunk_batches=3, start=(0, 4)))
    assert len(resumed) == len(full) - 4
    for a, b in zip(full[4:], resumed, strict=True):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_as_uint8_unwraps_subsets_and_decodes_other_datasets():
    images, labels = _images(n=10)
    nested = Subset(Subset(TensorImages(images, labels), [9, 7, 5, 3, 1]), [4, 0])
    x, y = as_uint8(nested)
    assert torch.equal(x, images[[1, 9]]) and torch.equal(y, labels[[1, 9]])

    class Pil:  # an ImageFolder-like dataset of PIL images
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return v2.functional.to_pil_image(images[i]), int(labels[i])

    x, y = as_uint8(Pil())
    assert torch.equal(x, images[:3]) and torch.equal(y, labels[:3])
    assert as_uint8(Pil(), resize=4)[0].shape == (3, 3, 4, 4)


def test_on_device_refuses_augmentations_it_cannot_run():
    crop_and_flip = {"crop": v2.RandomCrop(32, padding=4), "flip": v2.RandomHorizontalFlip()}
    steps = device_augment(crop_and_flip, 32).steps
    assert [(s.padding, s.flip) for s in steps] == [(4, 0.0), (0, 0.5)]
    for transform in (v2.ColorJitter(0.4), v2.RandomCrop(32, padding=4, padding_mode="reflect"),
                      v2.RandomErasing(value="random")):
        with pytest.raises(ConfigError, match="on.device"):
            device_augment({"t": transform}, 32)
    with pytest.raises(ConfigError, match="3-channel"):  # colour operations on grey images
        device_augment({"ra": v2.RandAugment()}, 32, in_chans=1)


def test_training_with_the_on_device_loader_logs_throughput_and_mfu(compose_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("VITLAB_PEAK_TFLOPS", "0.1")  # a known peak, so MFU is logged on CPU
    cfg = compose_cfg(["data.on_device=true", "trainer.max_epochs=1", "data.train_fraction=0.3",
                       "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1"])
    summary = train(cfg)
    assert summary["status"] == "completed" and summary["images_per_sec"] > 0
    assert 0 <= summary["test"]["test/acc"] <= 1
    rows = list(csv.DictReader(open(tmp_path / "csv" / "metrics.csv")))
    perf = [r for r in rows if r.get("perf/mfu")]
    assert perf, "no perf/mfu logged"
    for key in ("perf/images_per_sec", "perf/step_time_s", "perf/tflops", "perf/mfu"):
        assert float(perf[-1][key]) > 0
    assert 0 <= float(perf[-1]["perf/data_frac"]) < 1
    # written straight to the loggers, at the step and epoch Lightning files the loss under
    loss_steps = {(r["step"], r["epoch"]) for r in rows if r.get("train/loss_step")}
    assert {(r["step"], r["epoch"]) for r in perf} <= loss_steps and len(perf) >= len(loss_steps) - 2


def test_fast_path_sets_tf32_on_cuda_and_fused_adamw_on_cpu_and_cuda():
    module = SimpleNamespace(optimizer_factory=functools.partial(torch.optim.AdamW, lr=1e-3))
    before = torch.get_float32_matmul_precision()
    try:
        fast_path(compose_config([]), module, torch.device("cuda"))
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(before)
    assert module.optimizer_factory.keywords == {"lr": 1e-3, "fused": True}
    on_cpu = SimpleNamespace(optimizer_factory=functools.partial(torch.optim.AdamW, lr=1e-3))
    fast_path(compose_config([]), on_cpu, torch.device("cpu"))
    assert on_cpu.optimizer_factory.keywords == {"lr": 1e-3, "fused": True}
    assert torch.get_float32_matmul_precision() == before  # a CPU run leaves CUDA's settings alone
    chosen = SimpleNamespace(optimizer_factory=functools.partial(torch.optim.AdamW, fused=False))
    sgd = SimpleNamespace(optimizer_factory=functools.partial(torch.optim.SGD, lr=0.1))
    for m in (chosen, sgd):
        before_factory = m.optimizer_factory
        fast_path(compose_config([]), m, torch.device("cpu"))
        assert m.optimizer_factory is before_factory  # the config's own choice, and SGD, untouched


# ---- torch.compile: the model traces as one graph for every positional interface


@pytest.mark.parametrize("pos_embed", [Learned1d, Rope2d, RelativeBias, Relative])
def test_model_has_no_graph_breaks(pos_embed):
    model = VisionTransformer(**TINY, drop_path_rate=0.1, pos_embed=pos_embed).train()
    torch._dynamo.reset()
    explained = torch._dynamo.explain(model)(torch.randn(2, 3, 16, 16))
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1


@pytest.mark.slow
@pytest.mark.parametrize("pos_embed", [Learned1d, Rope2d])
def test_fullgraph_compile_trains_and_matches_eager(pos_embed):
    torch.manual_seed(0)
    model = VisionTransformer(**TINY, pos_embed=pos_embed)
    compiled = torch.compile(model, fullgraph=True)
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(compiled(x), model(x), atol=1e-4, rtol=1e-4)
    compiled(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_no_optimiser_step_loads_a_driver_library_once_the_failing_nvml_probe_is_skipped(monkeypatch):
    # Lightning's NVML-based CUDA check: without NVIDIA's driver torch loaded libnvidia-ml anew,
    # and failed, at every optimiser step (0.2 ms of a CPU step)
    loads = []
    real_cdll = ctypes.CDLL
    monkeypatch.setattr(ctypes, "CDLL", lambda name, *a, **k: loads.append(name) or real_cdll(name, *a, **k))
    monkeypatch.setenv(NVML_CHECK, "1")
    skip_failing_nvml_probe()
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(3, 4)).sum().backward()
    loads.clear()
    for _ in range(3):
        opt.step()
    assert loads == []
    if torch.version.cuda and not torch.cuda.is_available():  # here: a CUDA build, no driver
        assert torch.cuda.device_count() == 0


def test_the_nvml_check_stays_where_nvidias_library_loads(monkeypatch):
    if torch.version.cuda is None or torch.version.hip:
        pytest.skip("a CUDA build of torch asks NVML")
    monkeypatch.setattr(ctypes, "CDLL", lambda name, *a, **k: object())  # a driver is there
    monkeypatch.setenv(NVML_CHECK, "1")
    skip_failing_nvml_probe()
    assert os.environ[NVML_CHECK] == "1"  # a GPU machine keeps the check that spares fork

    def no_driver(name, *a, **k):
        raise OSError(f"{name}: cannot open shared object file")
    monkeypatch.setattr(ctypes, "CDLL", no_driver)
    skip_failing_nvml_probe()
    assert os.environ[NVML_CHECK] == "0"
