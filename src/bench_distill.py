"""What a distillation step costs: DeiT's step (student forward, teacher forward, loss, backward,
AdamW) against the student's own step plus one teacher forward, timed side by side in one process.

  python src/bench_distill.py                                  # vit_micro from vit_hybrid, digits size
  python src/bench_distill.py model=vit_tiny model.patch_size=4 teacher=vit_hybrid_lite \
      data.img_size=32 data.in_chans=3 batch_size=128 device=cuda

Rounds alternate the three measurements after a warm-up; the median round is reported. The
issue's bound: distill_step / (student_step + teacher_forward) <= 1 (the teacher adds no more
than its forward). A measurement, not a test: nothing is asserted. Weights are random (speed
does not depend on them); the teacher is built from its preset as `module.distill` would run it.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from vitlab.objectives.distill import Distillation
from vitlab.runs.build_model import build_model

CONF = str(Path(__file__).resolve().parents[1] / "conf")
OWN = {"teacher": "vit_hybrid", "batch_size": 64, "rounds": 10, "warmup": 2, "device": "cpu"}


def timed(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def split_options(argv: list[str], defaults: dict) -> tuple[dict, list[str]]:
    """The benchmark's own `key=value` options (typed as their defaults) and the config overrides."""
    own, overrides = dict(defaults), []
    for arg in argv:
        key, _, value = arg.partition("=")
        if key in own:
            own[key] = type(defaults[key])(value)
        else:
            overrides.append(arg)
    return own, overrides


def main(argv: list[str]) -> dict:
    own, overrides = split_options(argv, OWN)
    with initialize_config_dir(CONF, version_base=None):
        cfg = compose("train", [*overrides, "model.distill_token=true"])
        teacher_cfg = compose("train", [*overrides, f"model={own['teacher']}"])
    device = torch.device(own["device"])
    student = build_model(cfg.model, pretrained=False).to(device).train()
    teacher = build_model(teacher_cfg.model, pretrained=False)
    distill = Distillation(teacher, cfg.data.num_classes, "hard", distill_token=True)
    student.set_distilled_training(True)
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-4)
    criterion = torch.nn.CrossEntropyLoss()
    s = cfg.data.img_size
    x = torch.randn(own["batch_size"], cfg.data.in_chans, s, s, device=device)
    y = torch.randint(0, cfg.data.num_classes, (own["batch_size"],), device=device)

    def step(loss_of):
        optimizer.zero_grad(set_to_none=True)
        loss_of().backward()
        optimizer.step()

    def student_loss():
        cls, dist = student(x)
        return (criterion(cls, y) + criterion(dist, y)) / 2  # the same two heads, labels only

    runs = {"student_step": lambda: step(student_loss),
            "teacher_forward": lambda: distill.teacher(x),
            "distill_step": lambda: step(lambda: distill.loss(criterion, student(x), x, y))}
    times = {k: [] for k in runs}
    for i in range(own["warmup"] + own["rounds"]):
        order = list(runs) if i % 2 else list(reversed(runs))
        for name in order:
            t = timed(runs[name], device)
            if i >= own["warmup"]:
                times[name].append(t)
    median = {k: statistics.median(v) for k, v in times.items()}
    ratios = [d / (s_ + t) for d, s_, t in zip(times["distill_step"], times["student_step"],
                                                times["teacher_forward"], strict=True)]
    result = {**{f"{k}_ms": round(1e3 * v, 2) for k, v in median.items()},
              "ratio": round(statistics.median(ratios), 3),
              "overrides": overrides, "teacher": own["teacher"],
              "batch_size": own["batch_size"], "device": str(device),
              "torch_threads": torch.get_num_threads()}
    print(json.dumps(result, indent=1))
    print(f"distill step / (student step + teacher forward) = {result['ratio']:.3f} (median of "
          f"{own['rounds']} paired rounds; <= 1 means the teacher costs no more than its forward)")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
