"""`python src/predict.py ckpt_path=<run> images=<folder>`: top-k classes per image as CSV, with
the run's own preprocessing; an unreadable file is a row with its error."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from conftest import run_entry
from exportable import make_run
from PIL import Image

from vitlab.errors import ConfigError
from vitlab.runs.predict import image_paths, predict
from vitlab.runs.trained import load_trained

CLASSES = [f"digit {i}" for i in range(10)]


def image_folder(root):
    rng = np.random.default_rng(0)
    (root / "more").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 50), dtype=np.uint8)).save(root / "more" / f"{i}.png")
    Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(root / "colour.jpg")
    (root / "broken.png").write_bytes(b"not an image")
    (root / "notes.txt").write_text("not listed: not an image file")
    return root


def test_predictions_csv_on_a_folder_with_a_corrupt_file(tmp_path):
    run = make_run(tmp_path / "run", [], CLASSES)
    images = image_folder(tmp_path / "images")
    result = run_entry("predict.py", [f"ckpt_path={run}", f"images={images}", "top_k=3",
                                      "batch_size=2", f"hydra.run.dir={tmp_path / 'out'}"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = list(csv.DictReader((tmp_path / "out" / "predictions.csv").open()))
    assert [r["path"] for r in rows] == [str(p) for p in image_paths(images)]  # 5, no notes.txt
    broken = next(r for r in rows if r["path"].endswith("broken.png"))
    assert broken["error"].startswith("UnidentifiedImageError") and broken["class_1"] == ""
    for row in (r for r in rows if r is not broken):
        probs = [float(row[f"prob_{k}"]) for k in (1, 2, 3)]
        assert row["error"] == "" and row["class_1"] in CLASSES and probs == sorted(probs, reverse=True)
    assert (tmp_path / "out" / "predictions.png").is_file()


def test_predictions_are_the_models_on_the_runs_own_preprocessing(tmp_path):
    run = make_run(tmp_path / "run", [], CLASSES)
    trained = load_trained(run)
    path = image_folder(tmp_path / "images") / "more" / "0.png"
    row = predict(trained, [path], top_k=1, batch_size=4, device="cpu")[0]
    pixels = torch.from_numpy(np.array(Image.open(path)))[None].float() / 255  # 1 x 40 x 50
    size = trained.resize  # resize the shorter side, centre crop: the data module's eval transform
    image = torch.nn.functional.interpolate(pixels[None], size=(size, round(50 * size / 40)),
                                            mode="bilinear", antialias=True)[0]
    left = (image.shape[-1] - size) // 2
    image = (image[..., left:left + size] - trained.mean[0]) / trained.std[0]
    with torch.no_grad():
        probs = trained.model(image[None]).softmax(-1)[0]
    assert row["class_1"] == CLASSES[int(probs.argmax())]
    assert abs(row["prob_1"] - float(probs.max())) < 1e-3


def test_a_missing_folder_or_one_without_images_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=f"images={tmp_path / 'nope'}: no such file or folder"):
        image_paths(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no image files"):
        image_paths([tmp_path / "empty"])
