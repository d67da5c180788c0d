"""How a DataLoader's worker processes start: `data.multiprocessing_context`.

`forkserver` (the default) forks each worker from a small server process that has no threads.
A plain `fork` copies the training process as it is, threads included: DDP's gloo or NCCL
threads, the queue feeders of the other loaders' workers, the pin-memory thread, W&B's. A lock
that one of them held at that instant stays locked in the copy, and the worker waits on it
forever: the run hangs with no error (seen in about 1 of 75 two-process CPU runs with 2 workers
per rank, the worker stuck inside fork itself). `spawn` is as safe, but each worker imports
everything again.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver

from ..errors import ConfigError

STARTS = ("forkserver", "spawn", "fork")

# imported once by the server, so each worker it forks starts with them (a worker from a cold
# server would spend about 3 s importing torch, torchvision and the datasets' code)
PRELOAD = ["__main__", "vitlab.data"]


def start_method(num_workers: int, start: str | None) -> str | None:
    """The method that starts the loaders' workers (`start` checked: one of STARTS, or None for
    the platform's default). With forkserver the server starts now, so that its imports (about
    5 s of CPU) run while this process reads the data and builds the model."""
    if start is not None and start not in STARTS:
        raise ConfigError(f"data.multiprocessing_context={start!r}: use forkserver (the default), spawn, "
                          "fork or null (the platform's default)")
    if start not in multiprocessing.get_all_start_methods():
        return None  # Windows has neither fork nor forkserver: its one method, spawn
    if start == "forkserver" and num_workers:
        multiprocessing.set_forkserver_preload(PRELOAD)
        multiprocessing.forkserver.ensure_running()
    return start


def worker_processes(num_workers: int, start: str | None) -> dict:
    """DataLoader keywords for `num_workers` worker processes started by `start`."""
    if not num_workers:
        return {"num_workers": 0}
    return {"num_workers": num_workers, "multiprocessing_context": start}
