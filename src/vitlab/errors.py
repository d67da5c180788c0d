"""Errors that name their cause in one line: shown to the user without a traceback."""

import sys


class VitlabError(Exception):
    """Base class for input errors a user can fix (config, data, weights)."""


class ConfigError(VitlabError):
    """A config value is wrong; the message names the key and what would fix it."""


class DataError(VitlabError):
    """A dataset is missing, corrupt or inconsistent; the message names the path."""


def run_or_exit(fn, *args, **kwargs):
    """`fn(*args, **kwargs)`; a user-fixable error instead ends the command with its one line on
    stderr and exit code 2 (any other error propagates with its traceback: a bug)."""
    try:
        return fn(*args, **kwargs)
    except Exception as e:
        error = user_error(e)
        if error is None:
            raise
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


def user_error(error: BaseException | None) -> VitlabError | None:
    """The VitlabError behind `error`, or None: Hydra wraps an error raised while it instantiates
    a part (model, data, trainer) in its own InstantiationException, which names the target and
    full_key in several lines; the cause is what the user can fix."""
    chain, seen = [], set()
    while error is not None and id(error) not in seen:
        if isinstance(error, VitlabError):
            return _without_worker_traceback(error)
        chain.append(error)
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return next(filter(None, map(_rejected_argument, chain)), None)


def _without_worker_traceback(error: VitlabError) -> VitlabError:
    """An error raised in a DataLoader worker comes back re-raised with the worker's traceback
    in its message ("Caught DataError in DataLoader worker process 0. Original Traceback ...");
    its own one-line message is the traceback's last line."""
    text = str(error)
    if "Original Traceback" not in text:
        return error
    last = text.rstrip().splitlines()[-1]
    return type(error)(last.split(f"{type(error).__name__}: ", 1)[-1])


def _rejected_argument(error: BaseException) -> ConfigError | None:
    """A part's constructor refused a config value (Lightning's MisconfigurationException or a
    ValueError, an unexpected keyword): one line naming the config node. Other errors raised
    while instantiating are bugs to see with their traceback, so None."""
    text = str(error)
    if type(error).__name__ != "InstantiationException" or "full_key:" not in text:
        return None
    cause = error.__cause__
    refused = type(cause).__name__ in ("MisconfigurationException", "ValueError") or (
        isinstance(cause, TypeError) and "unexpected keyword argument" in str(cause))
    if not refused:
        return None
    key = text.rsplit("full_key:", 1)[1].split()[0]
    target = text.split("'")[1] if "'" in text else "it"
    reason = " ".join(str(cause).split())
    return ConfigError(f"{key}: {reason} (raised by {target} while building `{key}`; fix the "
                       f"{key}.* value, `python src/train.py --cfg job` shows them)")
