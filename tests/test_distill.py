"""DeiT distillation (module.distill) and the weight average (module.ema_decay): DeiT's loss
formula, the teacher frozen and kept out of the student's state, bad configs refused in one line,
the EMA update, and a distilled EMA run that resumes exactly."""

import pytest
import timm
import torch
import torch.nn.functional as F
from conftest import compose_config
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from safetensors.torch import save_file

from vitlab.callbacks.ema import ema_update
from vitlab.errors import ConfigError
from vitlab.models.vit import VisionTransformer
from vitlab.objectives.distill import Distillation, distillation_term
from vitlab.runs.build_model import build_model
from vitlab.training.config_checks import validate
from vitlab.training.train import train

KW = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=10)


def test_distillation_term_is_deits_formula():
    torch.manual_seed(0)
    s, t, tau = torch.randn(4, 10), torch.randn(4, 10), 3.0
    # facebookresearch/deit losses.py, soft: KL(sum) of log-softmaxes * tau^2 / numel
    soft = F.kl_div(F.log_softmax(s / tau, 1), F.log_softmax(t / tau, 1), reduction="sum",
                    log_target=True) * tau * tau / s.numel()
    torch.testing.assert_close(distillation_term(s, t, "soft", tau), soft)
    torch.testing.assert_close(distillation_term(s, t, "hard", tau), F.cross_entropy(s, t.argmax(1)))
    assert distillation_term(t, t, "soft", tau).abs() < 1e-6  # nothing to learn from itself


def test_loss_mixes_labels_and_teacher_and_teacher_stays_out_of_state():
    teacher = VisionTransformer(**KW).eval()
    d = Distillation(teacher, 10, "hard", alpha=0.25)
    assert not any(k.startswith("teacher") for k in d.state_dict())  # never checkpointed
    assert not list(d.parameters()) or all(not k.startswith("teacher") for k, _ in d.named_parameters())
    x, y = torch.randn(3, 3, 32, 32), torch.tensor([1, 2, 3])
    cls, dist = torch.randn(3, 10), torch.randn(3, 10)
    ce = torch.nn.CrossEntropyLoss()
    want = 0.75 * ce(cls, y) + 0.25 * F.cross_entropy(dist, teacher(x).argmax(1))
    torch.testing.assert_close(d.loss(ce, (cls, dist), x, y), want)


def test_ema_update_averages_floats_and_copies_integers():
    avg, cur = [torch.zeros(3), torch.tensor([1, 2])], [torch.ones(3), torch.tensor([5, 7])]
    update = ema_update(0.9)
    update(avg[:1], cur[:1], None)
    update(avg[1:], cur[1:], None)
    torch.testing.assert_close(avg[0], torch.full((3,), 0.1))
    assert avg[1].tolist() == [5, 7]


def timm_teacher_file(tmp_path, num_classes=10, in_chans=1):
    torch.manual_seed(1)
    teacher = timm.create_model("resnet10t", num_classes=num_classes, in_chans=in_chans).eval()
    path = tmp_path / "teacher.safetensors"
    save_file({k: v.contiguous() for k, v in teacher.state_dict().items()}, str(path))
    return teacher, path


def test_module_distils_soft_targets_from_a_timm_file_teacher_outside_its_state(tmp_path):
    reference, path = timm_teacher_file(tmp_path)
    cfg = compose_config(["module.distill.teacher=resnet10t", f"module.distill.weights={path}",
                          "model.distill_token=true", "module.distill.type=soft",
                          "module.distill.tau=2", "module.distill.alpha=0.3", "model.depth=1"])
    validate(cfg)
    module = instantiate(cfg.module, model=build_model(cfg.model)).train()
    teacher = module.distill.teacher.model
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert not any("teacher" in k for k in module.state_dict())  # never in the checkpoint
    assert {id(p) for p in module.parameters()}.isdisjoint(id(p) for p in teacher.parameters())
    x = torch.randn(4, 1, 32, 32)
    y = torch.softmax(torch.randn(4, 10), -1)  # Mixup/CutMix's soft targets
    loss = module._step((x, y), "train")
    with torch.no_grad():
        cls, dist = module.model(x)
        t = reference(x)
    want = 0.7 * module.loss(cls, y) + 0.3 * distillation_term(dist, t, "soft", 2.0)
    torch.testing.assert_close(loss, want)
    loss.backward()
    assert module.model.dist_token.grad.abs().sum() > 0


def test_the_teacher_does_not_shift_the_students_random_stream(tmp_path):
    """The same seed draws the same dropout masks whichever teacher (or none) is loaded: a study's
    students of one seed differ by their distillation only."""
    _, path = timm_teacher_file(tmp_path)
    draws = []
    for extra in ([], ["module.distill.teacher=resnet10t", f"module.distill.weights={path}",
                       "module.distill.type=none"]):
        cfg = compose_config(["model.depth=1", *extra])
        torch.manual_seed(3)
        instantiate(cfg.module, model=build_model(cfg.model))
        draws.append(torch.rand(4))
    assert torch.equal(*draws)


BAD = [
    (["module.distill.type=soft"], "module.distill.type=soft needs a teacher"),
    (["module.distill.type=medium"], "module.distill.type='medium' is not one of none, soft, hard"),
    (["module.distill.teacher=no_such_net"], "module.distill.teacher=no_such_net: no such run folder"),
    (["module.distill.teacher=resnet10t"], "module.distill.teacher=resnet10t is a timm model: give"),
    (["module.distill.alpha=1.5"], "module.distill.alpha=1.5 is outside [0, 1]"),
    (["module.distill.tau=0"], "module.distill.tau=0 is outside (0, inf]"),
    (["model.distill_token=true", "model.pool=mean"], "model.distill_token=true needs model.pool=cls"),
]


@pytest.mark.parametrize("overrides, message", BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_distillation_configs_are_one_line(overrides, message):
    with pytest.raises(ConfigError) as error:
        validate(compose_config(overrides))
    assert str(error.value).startswith(message) and "\n" not in str(error.value), str(error.value)


def test_a_teacher_file_of_other_classes_is_refused(tmp_path):
    _, path = timm_teacher_file(tmp_path, num_classes=7)
    cfg = compose_config(["module.distill.teacher=resnet10t", f"module.distill.weights={path}"])
    # Hydra wraps it; cli.py unwraps it into its one line
    with pytest.raises(InstantiationException, match=r"does not fit timm's resnet10t for 10 classes"):
        instantiate(cfg.module, model=build_model(cfg.model))


@pytest.mark.slow
def test_distilled_student_with_ema_resumes_exactly_and_keeps_no_teacher(compose_cfg, tmp_path):
    """A vitlab run teaches a distillation-token student with Mixup/CutMix and EMA; cut after
    an epoch and resumed, it ends exactly as an uninterrupted run (the teacher rebuilt from its
    folder), its checkpoints hold the average and no teacher, and the test logs agreement."""
    from omegaconf import OmegaConf
    from test_reliability import SMALL, StopAt, train_with

    teacher_cfg = compose_cfg([*SMALL, "trainer.max_epochs=1"])
    teacher_cfg.paths.output_dir = str(tmp_path / "teacher")
    train(teacher_cfg)
    (tmp_path / "teacher" / ".hydra").mkdir(exist_ok=True)  # what Hydra writes for a real run
    OmegaConf.save(teacher_cfg, tmp_path / "teacher" / ".hydra" / "config.yaml")

    def cfg_for(name, *extra):
        cfg = compose_cfg([*SMALL, "trainer.max_epochs=2", "seed=3", "data/mix=mixup_cutmix",
                           f"module.distill.teacher={tmp_path / 'teacher'}", "model.distill_token=true",
                           "module.ema_decay=0.9", *extra])
        cfg.paths.output_dir = str(tmp_path / name)
        return cfg

    full = train(cfg_for("full"))
    with pytest.raises(SystemExit):
        train_with(cfg_for("cut"), StopAt(1, KeyboardInterrupt()))
    resumed = train(cfg_for("cut", "ckpt_path=last"))
    assert resumed["global_step"] == full["global_step"]
    a, b = (torch.load(tmp_path / run / "checkpoints" / "last.ckpt", weights_only=False)
            for run in ("full", "cut"))
    for key in ("state_dict", "current_model_state"):  # the average, and the live weights
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), f"{key} differs after resume"
    assert not any("teacher" in k for k in a["state_dict"]) and "model.dist_token" in a["state_dict"]
    assert not all(torch.equal(a["state_dict"][k], a["current_model_state"][k]) for k in a["state_dict"])
    assert resumed["test"] == full["test"]
    assert 0 <= full["test"]["test/agreement"] <= 1 and 0 <= full["test"]["test/teacher_acc"] <= 1
    assert "train/loss_distill" in (tmp_path / "full" / "csv" / "metrics.csv").read_text()


def test_a_cnn_run_folder_teaches_with_its_trained_weights(tmp_path):
    """model=cnn (a timm CNN) as a vitlab teacher: its run folder's config rebuilds the CNN and
    the checkpoint's weights come back, so the teacher predicts what the trained CNN predicted."""
    from omegaconf import OmegaConf

    teacher_cfg = compose_config(["model=cnn", "model.backbone=test_resnet"],
                                 output_dir=tmp_path / "cnn")
    trained = build_model(teacher_cfg.model).eval()
    (tmp_path / "cnn" / ".hydra").mkdir(parents=True)
    OmegaConf.save(teacher_cfg, tmp_path / "cnn" / ".hydra" / "config.yaml")
    (tmp_path / "cnn" / "checkpoints").mkdir()
    torch.save({"state_dict": {f"model.{k}": v for k, v in trained.state_dict().items()}},
               tmp_path / "cnn" / "checkpoints" / "best.ckpt")  # as the LightningModule saves it
    cfg = compose_config([f"module.distill.teacher={tmp_path / 'cnn'}", "model.distill_token=true",
                          "model.depth=1"])
    validate(cfg)
    module = instantiate(cfg.module, model=build_model(cfg.model))
    teacher = module.distill.teacher
    assert isinstance(teacher.model, timm.models.ResNet) and not teacher.model.training
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(teacher(x), trained(x))


@pytest.mark.slow
def test_a_trained_cnn_run_teaches_a_student_end_to_end(compose_cfg, tmp_path):
    """A model=cnn run trained by train() is a teacher as its folder stands: the student's test
    measures the CNN's own test accuracy, and agreement with it."""
    from omegaconf import OmegaConf
    from test_reliability import SMALL

    cnn = [o for o in SMALL if not o.startswith("model.")]  # SMALL's ViT depth: a CNN has none
    teacher_cfg = compose_cfg([*cnn, "model=cnn", "model.backbone=test_resnet", "trainer.max_epochs=1"])
    teacher_cfg.paths.output_dir = str(tmp_path / "cnn")
    taught = train(teacher_cfg)
    (tmp_path / "cnn" / ".hydra").mkdir(exist_ok=True)  # what Hydra writes for a real run
    OmegaConf.save(teacher_cfg, tmp_path / "cnn" / ".hydra" / "config.yaml")
    cfg = compose_cfg([*SMALL, "trainer.max_epochs=1", "model.distill_token=true",
                       f"module.distill.teacher={tmp_path / 'cnn'}", "module.distill.type=hard"])
    cfg.paths.output_dir = str(tmp_path / "student")
    student = train(cfg)["test"]
    assert student["test/teacher_acc"] == pytest.approx(taught["test"]["test/acc"], abs=1e-6)
    assert 0 <= student["test/agreement"] <= 1


def test_distill_study_sweeps_both_teachers_each_of_its_own_fraction():
    """Stage 1 trains a hybrid and a CNN per fraction; stage 2 reads <teacher>_<fraction>."""
    from conftest import CONF
    from omegaconf import OmegaConf

    sweep = {name: OmegaConf.load(CONF / "experiment" / f"{name}.yaml").hydra.sweeper.params
             for name in ("distill_teachers", "distill")}
    assert sweep["distill_teachers"].model == "vit_hybrid,cnn"
    assert sweep["distill"]["distill.teacher"] == "vit_hybrid,cnn"
    cfg = compose_config(["experiment=distill", "distill.teachers_dir=/t", "distill.teacher=cnn",
                          "data.train_fraction=0.1"])
    assert cfg.module.distill.teacher == "/t/cnn_0.1" and "teacher=cnn" in cfg.tags


def test_distill_study_gives_the_token_to_distilled_students_only():
    for kind, token in (("none", False), ("soft", True), ("hard", True)):
        cfg = compose_config(["experiment=distill", "distill.teachers_dir=/t", f"module.distill.type={kind}",
                              "data.train_fraction=0.25"])
        assert cfg.model.distill_token is token
        assert cfg.module.distill.teacher == "/t/vit_hybrid_0.25"


def test_report_tables_the_agreement_against_the_fraction(tmp_path):
    import json

    import yaml

    from vitlab.runs.report import write_report

    runs = (("cnn", "none", 0.1, 0.8), ("cnn", "hard", 0.1, 0.9), ("cnn", "hard", 1.0, 0.95),
            ("vit_hybrid", "hard", 0.1, 0.7))
    for teacher, kind, fraction, agreement in runs:
        job = tmp_path / f"{teacher}_{kind}_{fraction}"
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(
            [f"distill.teacher={teacher}", f"module.distill.type={kind}", f"data.train_fraction={fraction}"]))
        (job / "summary.json").write_text(json.dumps({"status": "completed", "test": {
            "test/acc": 0.5, "test/agreement": agreement, "test/teacher_acc": len(teacher) / 100}}))
    report = write_report(tmp_path).read_text()
    section = report.split("## Student-teacher agreement")[1]
    assert "| distill.teacher=cnn, module.distill.type=hard | 0.900 ± 0.000 | 0.950 ± 0.000 |" in section
    assert "| distill.teacher=vit_hybrid, module.distill.type=hard | 0.700 ± 0.000 | — |" in section
    assert "![agreement vs fraction](agreement_vs_fraction.png)" in section
    teachers = section.split("## The teachers' own test accuracy")[1]
    assert "| distill.teacher=cnn | 0.030 ± 0.000 | 0.030 ± 0.000 |" in teachers  # one line a teacher


def test_fraction_legend_names_the_axis_once_there_are_two():
    from vitlab.runs.report import series_label

    config = {"distill.teacher": "cnn", "module.distill.type": "hard"}
    assert series_label(config, ["distill.teacher", "module.distill.type"]) == "teacher=cnn, type=hard"
    assert series_label(config, ["distill.teacher"]) == "cnn"


def test_distillation_benchmark_times_the_three_side_by_side():
    import runpy

    from conftest import ROOT

    main = runpy.run_path(str(ROOT / "src" / "bench_distill.py"), run_name="bench_distill")["main"]
    result = main(["rounds=1", "warmup=0", "batch_size=4", "model.depth=1", "teacher=vit_micro"])
    assert all(result[f"{k}_ms"] > 0 for k in ("student_step", "teacher_forward", "distill_step"))
    assert result["ratio"] > 0
