"""Which device and dtype the course runs on: CUDA, Apple MPS or CPU.

Notebooks never write ``"cuda"`` themselves; they call :func:`get_device` and print
what it chose. ``COURSE_DEVICE`` overrides the choice (``cuda``, ``mps`` or ``cpu``).
"""
import os

import torch

from .errors import CourseError

DEVICES = ("cuda", "mps", "cpu")


def get_device() -> str:
    """Pick the device to run on.

    Returns:
        `str`: ``"cuda"`` if an NVIDIA GPU is usable, else ``"mps"`` on Apple silicon,
        else ``"cpu"``. The environment variable ``COURSE_DEVICE`` forces one of them.

    Raises:
        CourseError: ``COURSE_DEVICE`` names an unknown device, or a device this
            machine does not have (e.g. ``cuda`` in a Colab runtime without GPU).
    """
    forced = os.environ.get("COURSE_DEVICE", "").strip().lower()
    if forced:
        if forced not in DEVICES:
            raise CourseError(f"COURSE_DEVICE={forced!r} is not one of {DEVICES}. Unset it or pick one of those.")
        if forced == "cuda" and not torch.cuda.is_available():
            raise CourseError(
                "COURSE_DEVICE=cuda, but PyTorch finds no NVIDIA GPU (this is what 'Found no NVIDIA driver' "
                "means). On Colab: Runtime > Change runtime type > Hardware accelerator: a GPU (e.g. T4), then "
                "run the notebook again. Elsewhere: unset COURSE_DEVICE to run on "
                f"{'mps' if _mps_available() else 'cpu'}."
            )
        if forced == "mps" and not _mps_available():
            raise CourseError("COURSE_DEVICE=mps, but this PyTorch has no Apple MPS backend. Unset COURSE_DEVICE.")
        return forced
    if torch.cuda.is_available():
        return "cuda"
    if _mps_available():
        return "mps"
    return "cpu"


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def get_dtype(device: str) -> torch.dtype:
    """The dtype to load weights in on ``device``.

    Args:
        device (`str`): ``"cuda"``, ``"mps"`` or ``"cpu"``.

    Returns:
        `torch.dtype`: ``torch.float16`` on CUDA (half the memory, tensor cores),
        ``torch.float32`` elsewhere (CPUs are slow in fp16; MPS is safest in fp32).
    """
    if device not in DEVICES:
        raise CourseError(f"Unknown device {device!r}; expected one of {DEVICES}.")
    return torch.float16 if device == "cuda" else torch.float32


def describe_device(device: str) -> str:
    """A one-line human description of ``device``, e.g. ``"cuda (Tesla T4, 15.8 GB)"``."""
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        return f"cuda ({props.name}, {props.total_memory / 2**30:.1f} GB)"
    if device == "mps":
        return "mps (Apple silicon GPU)"
    return f"cpu ({torch.get_num_threads()} threads)"
