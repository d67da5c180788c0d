"""Every command the README and the docs show is true: each `python src/train.py ...`,
`python src/eval.py ...` (and bench.py, bench_data.py, gpu_check.py) composes as `--cfg job`
would (a sweep: each value of a preset), each `make` target exists and its ARGS compose, and the
quick start runs and prints what the README shows."""

from __future__ import annotations

import functools
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, compose_config, run_entry

from vitlab.cli import compose_command, split_argv
from vitlab.errors import ConfigError
from vitlab.training.config_checks import validate

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"(?<!`)`([^`]+)`(?!`)")
PLACEHOLDER = re.compile(r"<[^<>]*>|\.\.\.|…")
ENTRIES = {"src/train.py": "train", "src/eval.py": "eval", "src/bench.py": "bench",
           "src/bench_data.py": "bench_data", "src/gpu_check.py": "gpu_check",
           "src/predict.py": "predict", "src/probe.py": "probe"}  # script -> its config
MAKE_ARGS = {"train": "train", "study-posemb": "train", "study-posemb-tuned": "train",
             "study-hybrid": "train", "bench": "bench", "gpu-check": "gpu_check"}  # ARGS -> a config
STUDY_BASE = {"study-posemb": ["experiment=posemb_ablation"], "study-hybrid": ["experiment=hybrid_vs_pure"],
              "study-posemb-tuned": ["experiment=posemb_tuned"]}


def _joined(block: str) -> list[str]:
    """Lines of a code block with `\\` continuations joined."""
    return block.replace("\\\n", " ").splitlines()


def commands_in(text: str) -> list[str]:
    """Shell commands a page shows: every line of bash/sh blocks, the `$ ` lines of console
    blocks, and inline code that starts like a command."""
    found = []
    for lang, block in FENCE.findall(text):
        for line in _joined(block):
            line = line.strip()
            if lang == "console":
                if line.startswith("$ "):
                    found.append(line[2:])
            elif lang in ("bash", "sh", "shell"):
                found.append(line)
    prose = FENCE.sub("", text)
    for span in INLINE.findall(prose):  # `a; b` or `a && b`: each command on its own
        for part in re.split(r";\s|&&", " ".join(span.split())):
            if part.strip().startswith(("python src/", "make ", "torchrun ")):
                found.append(part.strip())
    return [c for c in found if c and not c.startswith("#")]


def _words(command: str) -> list[str]:
    """The command's words, a placeholder (`<folder with data>`, `...`) standing for a value
    (`x`), a bare `...` (any further arguments) left out."""
    words = shlex.split(PLACEHOLDER.sub("x", command), comments=True)
    return [w for w in words if w != "x"]


def training_commands() -> list[tuple[str, str, str, list[str]]]:
    """(page, command, config name, argv) for every entry-point command shown."""
    out = []
    for page in PAGES:
        for command in commands_in(page.read_text()):
            words = _words(command)
            script = next((w for w in words if w in ENTRIES), None)
            if script is None or not words or words[0] not in ("python", "torchrun"):
                continue
            argv = words[words.index(script) + 1:]
            out.append((page.relative_to(ROOT).as_posix(), command, ENTRIES[script], argv))
    return out


def make_commands() -> list[tuple[str, str, list[str]]]:
    out = []
    for page in PAGES:
        for command in commands_in(page.read_text()):
            words = _words(command)
            if words and words[0] == "make":
                out.append((page.relative_to(ROOT).as_posix(), command, words[1:]))
    return out


def meta_commands() -> list[tuple[str, str, str, list[str]]]:
    """The command each kept study says made it (docs/results/data/<study>/meta.yaml)."""
    out = []
    for meta in sorted((ROOT / "docs" / "results" / "data").glob("*/meta.yaml")):
        commands = str(yaml.safe_load(meta.read_text()).get("command", ""))
        for command in re.split(r"\n|;|&&", commands):  # one or several, maybe after VAR=value
            words = _words(command)
            script = next((w for w in words if w in ENTRIES), None)
            if script:
                out.append((meta.relative_to(ROOT).as_posix(), command.strip(), ENTRIES[script],
                            words[words.index(script) + 1:]))
    return out


def makefile_variables() -> set[str]:
    """The variables the Makefile reads, `$(NAME)`: what `make target NAME=value` can set."""
    return set(re.findall(r"\$\((\w+)\)", (ROOT / "Makefile").read_text()))


def makefile_targets() -> set[str]:
    targets = set()
    for line in (ROOT / "Makefile").read_text().splitlines():
        head = re.match(r"^([a-zA-Z][\w .-]*?):(?!=)", line)
        if head:
            targets.update(head.group(1).split())
    return targets


def test_the_scan_finds_the_commands_it_must():
    """The scanner itself: the README's quick start and the docs' commands are found."""
    readme = [c for p, c, _, _ in training_commands() if p == "README.md"]
    assert "python src/train.py model=vit_hybrid" in " | ".join(readme)
    assert {"train", "test"} <= {w[0] for p, _, w in make_commands() if p == "README.md"}
    assert len(training_commands()) > 40 and len(make_commands()) > 10
    assert commands_in("```bash\npython src/train.py a=1 \\\n    b=2   # note\n```\n") == \
        ["python src/train.py a=1      b=2   # note"]
    assert _words("python src/train.py a=1 b=2 # note") == ["python", "src/train.py", "a=1", "b=2"]


TRAINING = training_commands() + meta_commands()


@pytest.mark.parametrize("page, command, config, argv", TRAINING,
                         ids=[f"{p}: {c[:90]}" for p, c, _, _ in TRAINING])
def test_every_shown_command_composes(page, command, config, argv):
    overrides, _ = split_argv(argv) or ([], False)
    error = _composes(config, tuple(overrides))
    assert error is None, f"{page}: `{command}` does not compose: {error}"


@functools.cache
def _composes(config: str, overrides: tuple[str, ...]) -> str | None:
    """None when the command composes (as the command line checks it: a sweep's further
    preset values must exist), else the one-line error; the same command shown twice, once."""
    try:
        compose_command(config, list(overrides), every=False)
    except ConfigError as e:
        return str(e)
    return None


MAKES = make_commands()


@pytest.mark.parametrize("page, command, words", MAKES, ids=[f"{p}: {c[:90]}" for p, c, _ in MAKES])
def test_every_shown_make_target_exists_and_its_args_compose(page, command, words):
    targets = [w for w in words if "=" not in w and not w.startswith("-")]
    variables = dict(w.split("=", 1) for w in words if "=" in w)
    missing = set(targets) - makefile_targets()
    assert not missing, f"{page}: `{command}`: no Makefile target {sorted(missing)}"
    unread = set(variables) - makefile_variables()
    assert not unread, f"{page}: `{command}`: the Makefile reads no {sorted(unread)}"
    target = targets[0] if targets else "help"
    if "ARGS" in variables and target in MAKE_ARGS:
        overrides = _words(variables["ARGS"])
        error = _composes(MAKE_ARGS[target], tuple(STUDY_BASE.get(target, []) + overrides))
        assert error is None, f"{page}: `{command}`: ARGS do not compose: {error}"


def test_make_train_and_test_run_what_the_quick_start_says():
    """`make train` is `python src/train.py`, `make test` is pytest (dry run: nothing installs)."""
    for target, expected in (("train", "src/train.py"), ("test", "-m pytest")):
        dry = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True)
        assert dry.returncode == 0 and expected in dry.stdout, dry.stdout + dry.stderr


def _shown_output(page: Path, command: str) -> list[str]:
    """The output lines a console block shows after `$ <command>` (up to the next prompt)."""
    for lang, block in FENCE.findall(page.read_text()):
        lines = block.splitlines()
        if lang == "console" and f"$ {command}" in lines:
            after = lines[lines.index(f"$ {command}") + 1:]
            return [line for line in after[:next((i for i, x in enumerate(after) if x.startswith("$ ")),
                                                  len(after))] if line.strip() not in ("", "...")]
    return []


def test_quick_start_runs_and_prints_what_the_readme_shows(tmp_path):
    """`make train` runs `python src/train.py`; here for 2 epochs (the full 35 take ~40 s on 2
    idle cores): the lines the README shows come out, with this run's values."""
    shown = _shown_output(ROOT / "README.md", "make train")
    assert [line.split(":")[0] for line in shown] == ["test accuracy", "run folder"], shown
    run_dir = tmp_path / "run"
    result = run_entry("train.py", ["trainer.max_epochs=2", "trainer.enable_progress_bar=false",
                                    f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    printed = [line for line in result.stdout.splitlines()
               if line.startswith(("test accuracy", "run folder"))]
    assert len(printed) == 2, result.stdout[-2000:]
    accuracy = r"test accuracy: \d\.\d{4}  \(\d+ s\)"
    assert re.fullmatch(accuracy, shown[0]) and re.fullmatch(accuracy, printed[0]), (shown, printed)
    assert printed[1] == f"run folder: {run_dir}"


def _cli_error(argv: list[str], run_dir: Path) -> str:
    """What `python src/train.py <argv>` prints on stderr: the checks before any data loads run
    in this process (fast); anything else runs the real command."""
    try:
        overrides = split_argv(argv)[0]
        compose_command("train", overrides, every=False)  # what the command line checks first
        validate(compose_config(overrides, output_dir=run_dir))  # then the run, before any data
    except ConfigError as e:
        return f"error: {e}"
    result = run_entry("train.py", [*argv, f"hydra.run.dir={run_dir}"], cwd=run_dir.parent, timeout=300)
    assert result.returncode == 2, result.stderr[-1500:]
    return result.stderr


def test_console_errors_shown_in_the_docs_are_what_the_cli_prints(tmp_path):
    """The error line shown after a `$ python src/train.py ...` is printed word for word."""
    checked = 0
    for page in PAGES:
        for lang, block in FENCE.findall(page.read_text()):
            lines = block.splitlines()
            for i, line in enumerate(lines[:-1]):
                if lang == "console" and line.startswith("$ python src/train.py") and \
                        lines[i + 1].startswith("error: "):
                    printed = _cli_error(_words(line[2:])[2:], tmp_path / str(checked))
                    assert lines[i + 1] in printed.splitlines(), f"{page.name}: {line}\n{printed}"
                    checked += 1
    assert checked >= 3
