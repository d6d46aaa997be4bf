"""Measuring primitives: time a call and record the peak memory of the timed calls (lesson 9, §2).

What lesson 9 teaches and every measurement of the course uses (``bench``, ``full_size``): a device's queue is
synchronised around each call (CUDA and MPS run asynchronously), a warm-up call comes first, the median of a few
repeats is kept. Memory is what each device can report: on CUDA ``torch.cuda.max_memory_allocated`` (reset per
measurement); on a Linux CPU the process's peak resident set (``VmHWM``, reset through ``/proc/self/clear_refs``:
Python, the libraries and every model still loaded count too, so compare rows, not machines); elsewhere `None`.
``logging`` at INFO level (``python -m course_utils bench`` turns it on) reports each measurement as it runs.
"""

import contextlib
import gc
import logging
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

GIB = 2**30
log = logging.getLogger(__name__)


@dataclass
class Row:
    """One measured setting.

    Attributes:
        group (`str`): ``"speed"``, ``"memory"``, ``"full_size"`` or ``"laptop"``.
        name (`str`): what was measured, e.g. ``"attention slicing"``.
        seconds (`float` or `None`): median wall time of one call (``None``: not measured, see ``note``).
        peak_gib (`float` or `None`): peak memory during the calls, GiB (see the module docstring).
        added_gib (`float` or `None`): that peak minus the memory in use just before the calls.
        repeats (`int`): calls timed (after one warm-up call).
        score (`float` or `None`): on `tiny`, the share of images drawn with the colour and shape asked.
        note (`str`): what to know when reading the row.
    """

    group: str
    name: str
    seconds: float | None = None
    peak_gib: float | None = None
    added_gib: float | None = None
    repeats: int = 0
    score: float | None = None
    note: str = ""
    times: list = field(default_factory=list)


def synchronize(device: str) -> None:
    """Wait until ``device`` has finished its queued work (CUDA and MPS run asynchronously)."""
    if device == "cuda":
        torch.cuda.synchronize()
    elif device == "mps":
        torch.mps.synchronize()


def memory_in_use(device: str) -> int | None:
    """Bytes in use now: CUDA tensors, MPS driver memory, or this process's resident set (Linux)."""
    if device == "cuda":
        return torch.cuda.memory_allocated()
    if device == "mps":
        return torch.mps.driver_allocated_memory()
    return _proc_status("VmRSS")


def reset_peak(device: str) -> None:
    """Start a new peak-memory window on ``device`` (on a Linux CPU: the process's ``VmHWM``)."""
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    elif device == "cpu":
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")  # 5 = reset the peak resident set size


def peak_memory(device: str) -> int | None:
    """Peak bytes since :func:`reset_peak`; ``None`` where the device cannot say (MPS, macOS/Windows CPU)."""
    if device == "cuda":
        return torch.cuda.max_memory_allocated()
    if device == "cpu":
        return _proc_status("VmHWM")
    return None


def _proc_status(key: str) -> int | None:
    """A ``kB`` line of ``/proc/self/status`` in bytes; ``None`` off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def measure(fn, device: str, group: str, name: str, repeats: int = 3, warmup: int = 1, note: str = "") -> Row:
    """Time ``fn()`` and record the peak memory of the timed calls.

    Args:
        fn (`Callable[[], Any]`): one call of what is measured (one image, one UNet step, ...).
        device (`str`): where it runs; its queue is synchronised around every call.
        group (`str`), name (`str`), note (`str`): copied into the :class:`Row`.
        repeats (`int`, defaults to 3): timed calls; the row keeps their median.
        warmup (`int`, defaults to 1): untimed calls first (kernels chosen, caches filled).

    Returns:
        :class:`Row` with ``seconds`` (median), ``peak_gib``, ``added_gib``, ``times``.
    """
    log.info("measuring %s: %s ...", group, name)
    for _ in range(warmup):
        fn()
    synchronize(device)
    gc.collect()
    before = memory_in_use(device)
    reset_peak(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    peak = peak_memory(device)
    log.info("measured %s: %s in %.3g s", group, name, statistics.median(times))
    return Row(
        group,
        name,
        statistics.median(times),
        _gib(peak),
        _gib(peak - before) if peak is not None and before is not None else None,
        repeats,
        note=note,
        times=times,
    )


def _gib(n: int | None) -> float | None:
    return None if n is None else round(n / GIB, 3)


def not_measured(group: str, name: str, why: str) -> Row:
    """A row for a setting that cannot run here, saying why (e.g. CPU offload without a GPU)."""
    return Row(group, name, note=f"not measured: {why}")
