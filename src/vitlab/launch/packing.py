"""The packing loop: start a sweep's jobs as slots free up, collect their results in job order.

Jobs start in sweep order; a job waiting for more GPUs than are free lets later jobs that fit go
first (the sweep is finite, so it starts once enough running jobs have ended). The loop knows
nothing of Hydra or submitit: `submit(i, gpus)` starts job i on those GPU ids and returns a
handle with `done()` and `cancel()`; `finish(i, handle)` turns an ended job into its result.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from .slots import Demand, SlotPool


def run_packed(demands: Sequence[Demand], pool: SlotPool, submit: Callable[[int, tuple[int, ...]], Any],
               finish: Callable[[int, Any], Any], poll_s: float = 1.0, first: int = 0,
               sleep: Callable[[float], None] = time.sleep) -> list:
    for i, demand in enumerate(demands):
        pool.check(demand, f"job #{first + i}")  # each fits an idle machine: the loop cannot stall
    pending = list(range(len(demands)))
    running: dict[int, tuple[Any, tuple[int, ...]]] = {}
    results: list = [None] * len(demands)
    try:
        while pending or running:
            for i in list(pending):
                gpus = pool.take(demands[i])
                if gpus is not None:
                    pending.remove(i)
                    running[i] = (submit(i, gpus), gpus)
            ended = [i for i, (handle, _) in running.items() if handle.done()]
            for i in ended:
                handle, gpus = running.pop(i)
                pool.release(gpus)
                results[i] = finish(i, handle)
            if not ended:
                sleep(poll_s)
    except BaseException:  # Ctrl-C or a launcher error: do not leave jobs running unattended
        for handle, _ in running.values():
            handle.cancel(check=False)
        raise
    return results
