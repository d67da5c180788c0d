"""Dataset builders: one file each. A builder takes its config options and returns `Splits`."""
