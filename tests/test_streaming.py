"""Streaming from litdata shards: the converter, exactly-once epochs over ranks, exact resume."""

import json
import sys
from collections import Counter

import lightning as L
import numpy as np
import pytest
from conftest import compose_config, run_entry
from hydra.utils import instantiate
from PIL import Image

from vitlab.callbacks.sample_ids import read_sample_ids
from vitlab.errors import ConfigError, DataError
from vitlab.training.config_checks import validate

pytest.importorskip("litdata")

from vitlab.data.shards import MANIFEST, convert, main  # noqa: E402

CLASSES = ("a", "b", "c")
TRAIN_PER_CLASS = 24  # 72 training images: 9 batches of 8, or 2 ranks x 9 batches of 4


def write_jpegs(root, split, n, size=12, seed=0):
    rng = np.random.default_rng(seed)
    for c in CLASSES:
        (root / split / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
                root / split / c / f"{i:03d}.jpg")


def image_folder(root):
    write_jpegs(root, "train", TRAIN_PER_CLASS)
    write_jpegs(root, "val", 4, seed=1)  # 12: at least one batch of 4 on each of 2 ranks
    write_jpegs(root, "test", 2, seed=2)
    return root


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    convert(image_folder(root / "folder"), root / "shards", workers=2, chunk_size=8, verbose=False)
    return root / "shards"


def data_cfg(shards, *overrides):
    return compose_config(["data=streaming", f"data.input_dir={shards}", "data.num_classes=3",
                           "data.img_size=16", "data.batch_size=8", "data.num_workers=2",
                           "data.return_ids=true", "data.pin_memory=false", *overrides]).data


def epochs_of_ids(dm, epochs=2):
    """Per epoch: the (ids, labels) of every batch of the training loader."""
    loader = dm.train_dataloader()
    return [[(b[2].tolist(), b[1].tolist()) for b in loader] for _ in range(epochs)]


# --- the converter ------------------------------------------------------------------------------

def test_converter_writes_shuffled_shards_a_manifest_and_skips_an_unchanged_folder(shards, capsys):
    manifest = json.loads((shards / MANIFEST).read_text())
    assert manifest["classes"] == list(CLASSES)
    assert {k: v["samples"] for k, v in manifest["splits"].items()} == {"train": 72, "val": 12, "test": 6}
    chunks = json.loads((shards / "train" / "index.json").read_text())["chunks"]
    assert len(chunks) > 2  # several chunks: ranks and workers share them out
    before = {p: p.stat().st_mtime_ns for p in shards.rglob("*")}
    assert main([str(manifest["source"]), str(shards), "--chunk-size", "8", "--workers", "2"]) == 0
    assert "up to date" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in shards.rglob("*")} == before  # nothing rewritten


def test_converter_names_a_corrupt_image_or_skips_and_counts_it(tmp_path, capsys):
    folder = image_folder(tmp_path / "folder")
    bad = folder / "train" / "b" / "005.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=r"cannot read image .*b/005.jpg: .*--skip-corrupt") as error:
        convert(folder, tmp_path / "out", workers=2, chunk_size=8, verbose=False)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out" / MANIFEST).exists()  # nothing that looks complete
    assert main([str(folder), str(tmp_path / "out"), "--workers", "2"]) == 2
    assert "error: cannot read image" in capsys.readouterr().err
    manifest = convert(folder, tmp_path / "out", skip_corrupt=True, workers=2, chunk_size=8, verbose=False)
    assert manifest["splits"]["train"] == {"samples": 71, "skipped": [str(bad)]}
    dm = instantiate(data_cfg(tmp_path / "out", "data.batch_size=1"))
    dm.setup("fit")
    ids = [i for epoch in epochs_of_ids(dm, 1) for batch, _ in epoch for i in batch]
    assert len(ids) == 71 and len(set(ids)) == 71


def test_max_size_stores_large_images_resized_and_small_ones_as_they_are(tmp_path):
    from litdata import StreamingDataset

    from vitlab.data.shards import decode

    write_jpegs(tmp_path / "folder", "train", 3, size=40)
    write_jpegs(tmp_path / "folder", "test", 1, size=12)
    convert(tmp_path / "folder", tmp_path / "out", workers=1, max_size=16, verbose=False)
    sizes = {split: {tuple(decode(s["image"]).shape) for s in StreamingDataset(str(tmp_path / "out" / split))}
             for split in ("train", "test")}
    assert sizes == {"train": {(3, 16, 16)}, "test": {(3, 12, 12)}}


def test_streaming_without_litdata_is_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "litdata", None)  # import litdata fails
    with pytest.raises(ConfigError) as error:
        validate(compose_config(["data=streaming", "data.input_dir=x", "data.num_classes=3"]))
    assert "pip install 'vitlab[streaming]'" in str(error.value) and "\n" not in str(error.value)


def test_missing_shards_name_the_converter(tmp_path):
    dm = instantiate(data_cfg(tmp_path / "nowhere"))
    with pytest.raises(DataError, match=r"holds no manifest.json: write shards with `python -m vitlab"):
        dm.setup("fit")


# --- epochs over ranks ---------------------------------------------------------------------------

def rank_epochs(shards, monkeypatch, world, *overrides):
    """Each simulated rank's epochs (litdata reads the rank from WORLD_SIZE / GLOBAL_RANK)."""
    out = []
    for rank in range(world):
        monkeypatch.setenv("WORLD_SIZE", str(world))
        monkeypatch.setenv("GLOBAL_RANK", str(rank))
        dm = instantiate(data_cfg(shards, f"data.batch_size={8 // world}", *overrides))
        dm.setup("fit")
        out.append(epochs_of_ids(dm))
    return out


def test_each_sample_once_per_epoch_over_ranks_in_equal_batches_of_mixed_classes(shards, monkeypatch):
    ranks = rank_epochs(shards, monkeypatch, world=2)
    assert [len(epoch) for r in ranks for epoch in r] == [9, 9, 9, 9]  # equal batch counts
    for e in range(2):
        ids = [i for r in ranks for batch, _ in r[e] for i in batch]
        assert sorted(ids) == list(range(72)), f"epoch {e}: not each sample once"
    labels = [labels for r in ranks for epoch in r for _, labels in epoch]
    # shuffled before writing: random batches of 4 from 3 classes hold 2.4 classes on average,
    # batches of class-sorted shards 1.1
    assert np.mean([len(set(batch)) for batch in labels]) > 2
    again = rank_epochs(shards, monkeypatch, world=2)
    assert again == ranks  # same seed, same order
    assert ranks[0][0] != ranks[0][1]  # the next epoch, another order
    other = rank_epochs(shards, monkeypatch, 2, "data.seed=1")
    assert other[0][0] != ranks[0][0]


def test_remote_input_is_read_through_the_cache_dir(shards, tmp_path):
    dm = instantiate(data_cfg(f"file://{shards}", f"data.cache_dir={tmp_path / 'cache'}"))
    dm.setup("fit")
    ids = [i for batch, _ in epochs_of_ids(dm, 1)[0] for i in batch]
    assert sorted(ids) == list(range(72))
    assert list((tmp_path / "cache" / "streaming").rglob("*.bin"))  # chunks came through the cache


# --- resume through the Trainer ------------------------------------------------------------------

TINY = ["model.depth=1", "model.embed_dim=32", "model.num_heads=2", "trainer.max_epochs=3", "test=false",
        "trainer.enable_progress_bar=false", "~callbacks.attention", "~callbacks.confusion_matrix",
        "~callbacks.pos_similarity", "+callbacks.sample_ids._target_=vitlab.callbacks.sample_ids.SampleIds"]


class StopAtStep(L.Callback):
    """Ctrl-C before training step `step`: the interrupt checkpoint is mid-epoch."""

    def __init__(self, step):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise KeyboardInterrupt


def stream_run(shards, run_dir, *overrides, stop=None):
    from test_reliability import train_with

    cfg = compose_config([*TINY, "data=streaming", f"data.input_dir={shards}", "data.num_classes=3",
                          "data.img_size=16", "data.batch_size=8", "data.num_workers=2",
                          "data.return_ids=true", "data.pin_memory=false", *overrides], output_dir=run_dir)
    if stop is None:
        return train_with(cfg)
    with pytest.raises(SystemExit):  # Lightning's graceful Ctrl-C
        train_with(cfg, StopAtStep(stop))


def seen(run_dir) -> dict:
    """(epoch, batch) -> ids: a resumed batch replaces the one logged before the interrupt."""
    lines = read_sample_ids(run_dir / "sample_ids")[0]
    return {(line["epoch"], line["batch"]): line["ids"] for line in lines}


@pytest.mark.slow
def test_resume_mid_epoch_and_at_the_epoch_boundary_sees_what_an_uninterrupted_run_saw(shards, tmp_path):
    full = tmp_path / "full"
    stream_run(shards, full)
    expected = seen(full)
    assert len(expected) == 27  # 3 epochs x 9 batches
    cut = tmp_path / "cut"
    every_5_steps = ["+callbacks.steps._target_=lightning.pytorch.callbacks.ModelCheckpoint",
                     f"+callbacks.steps.dirpath={cut / 'checkpoints'}", "+callbacks.steps.filename=steps",
                     "+callbacks.steps.every_n_train_steps=5"]
    stream_run(shards, cut, *every_5_steps, stop=13)  # Ctrl-C at epoch 1, batch 4
    ckpts = cut / "checkpoints"
    for name, ckpt, upto in (("mid", "interrupted.ckpt", 13), ("steps", "steps.ckpt", 10),
                             ("boundary", "last.ckpt", 9)):
        run = tmp_path / name
        run.mkdir()
        (run / "sample_ids").mkdir()
        # the log up to the checkpoint, as the interrupted run wrote it
        lines = read_sample_ids(cut / "sample_ids")[0]
        (run / "sample_ids" / "rank0.jsonl").write_text(
            "".join(json.dumps(line) + "\n" for line in lines[:upto]))
        stream_run(shards, run, f"ckpt_path={ckpts / ckpt}")
        assert seen(run) == expected, f"{name}: resumed run saw other samples"


@pytest.mark.slow
def test_resume_with_another_worker_count_sees_exactly_the_unseen_samples(shards, tmp_path):
    cut = tmp_path / "cut"
    stream_run(shards, cut, stop=13)
    stream_run(shards, cut, f"ckpt_path={cut / 'checkpoints' / 'interrupted.ckpt'}", "data.num_workers=1")
    batches = seen(cut)
    before = {i for b in range(4) for i in batches[1, b]}  # epoch 1 up to the interrupt
    after = [i for b in range(4, 9) for i in batches[1, b]]  # after it, with 1 worker instead of 2
    assert len(after) == len(set(after)) and sorted(before | set(after)) == list(range(72))
    assert not before & set(after)


@pytest.mark.slow
def test_two_process_ddp_with_two_workers_each_sees_every_sample_once_per_epoch(shards, tmp_path):
    run = tmp_path / "ddp"
    result = run_entry("train.py", [*TINY, "trainer=ddp_cpu", "trainer.max_epochs=2", "data=streaming",
                                    f"data.input_dir={shards}", "data.num_classes=3", "data.img_size=16",
                                    "data.batch_size=8", "data.num_workers=2", "data.return_ids=true",
                                    "data.pin_memory=false", f"hydra.run.dir={run}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    logs = read_sample_ids(run / "sample_ids")
    assert sorted(logs) == [0, 1]
    for epoch in range(2):
        per_rank = [[line["ids"] for line in logs[r] if line["epoch"] == epoch] for r in (0, 1)]
        assert len(per_rank[0]) == len(per_rank[1]) == 9  # equal batch counts: 72 / (2 x 4)
        ids = [i for batches in per_rank for batch in batches for i in batch]
        assert sorted(ids) == list(range(72)), f"epoch {epoch}"
    assert Counter(len(line["ids"]) for r in logs for line in logs[r]) == {4: 36}
