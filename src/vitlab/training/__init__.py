"""The pipelines that drive a run, train and evaluate, and what they are built from: the config's
checks, data-parallel glue, the step budget of a data-size study, float8, the loggers."""
