"""The Lightning and torchmetrics internals vitlab reads (vitlab/internals.py) exist in the
installed versions; an upgrade that removes one fails here, naming it and who needs it."""

from lightning.pytorch.loops import _TrainingEpochLoop

from vitlab import internals


def test_every_private_attribute_vitlab_reads_exists_in_the_installed_versions():
    assert internals.missing() == []


def test_a_removed_attribute_is_named_with_who_needs_it(monkeypatch):
    monkeypatch.delattr(_TrainingEpochLoop, "_batches_that_stepped", raising=False)
    monkeypatch.setattr(_TrainingEpochLoop, "__init__", _without_logging_step(_TrainingEpochLoop.__init__))
    lost = internals.missing()
    assert len(lost) == 1
    assert lost[0].startswith("_TrainingEpochLoop._batches_that_stepped is gone in lightning ")
    assert "exact_resume.py, log_to_loggers: the logging step reads it (vitlab/internals.py)" in lost[0]


def _without_logging_step(init):
    def wrapped(self, *args, **kwargs):
        init(self, *args, **kwargs)
        del self._batches_that_stepped  # as if an upgrade had renamed it

    return wrapped
