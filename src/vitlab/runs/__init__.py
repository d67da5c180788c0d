"""Runs after training: a run folder read back (its config, checkpoint, model and summary), the
trained classifier it holds, exported (export/) or predicting, and a sweep's runs reported
(report.py, the results pages)."""
