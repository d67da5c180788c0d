"""Errors that name their cause in one line: shown to the user without a traceback."""


class VitlabError(Exception):
    """Base class for input errors a user can fix (config, data, weights)."""


class ConfigError(VitlabError):
    """A config value is wrong; the message names the key and what would fix it."""


class DataError(VitlabError):
    """A dataset is missing, corrupt or inconsistent; the message names the path."""
