"""Which device and dtype the course runs on: CUDA, Apple MPS or CPU; float16, bfloat16 or float32.

Notebooks never write ``"cuda"`` or a dtype themselves; they call :func:`get_device` and
:func:`get_dtype` and print what was chosen. ``COURSE_DEVICE`` overrides the device (``cuda``, ``mps`` or
``cpu``), ``COURSE_DTYPE`` the dtype (``float16``, ``bfloat16`` or ``float32``) on any device: the course's
tests run every lesson in float16 on a CPU that way, to execute what a Colab GPU runs.
"""

import os

import torch

from .errors import CourseError

DEVICES = ("cuda", "mps", "cpu")
# The dtypes COURSE_DTYPE may name (a few common spellings of each are accepted too).
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
_DTYPE_ALIASES = {"fp16": "float16", "half": "float16", "bf16": "bfloat16", "fp32": "float32", "float": "float32"}


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


def forced_dtype() -> str | None:
    """The dtype ``COURSE_DTYPE`` names (``"float16"``, ``"bfloat16"`` or ``"float32"``), or `None` when unset.

    Raises:
        CourseError: ``COURSE_DTYPE`` names something else.
    """
    forced = os.environ.get("COURSE_DTYPE", "").strip().lower().removeprefix("torch.")
    if not forced:
        return None
    forced = _DTYPE_ALIASES.get(forced, forced)
    if forced not in DTYPES:
        raise CourseError(
            f"COURSE_DTYPE={forced!r} is not one of {tuple(DTYPES)}. Unset it (the course then picks "
            "float16 on CUDA, float32 elsewhere) or pick one of those."
        )
    return forced


def get_dtype(device: str) -> torch.dtype:
    """The dtype to load weights in on ``device``.

    Args:
        device (`str`): ``"cuda"``, ``"mps"`` or ``"cpu"``.

    Returns:
        `torch.dtype`: ``COURSE_DTYPE`` if set; else ``torch.float16`` on CUDA (half the memory, tensor
        cores) and ``torch.float32`` elsewhere (CPUs are slow in fp16; MPS is safest in fp32).

    Raises:
        CourseError: an unknown device, or ``COURSE_DTYPE`` set to an unknown dtype.
    """
    if device not in DEVICES:
        raise CourseError(f"Unknown device {device!r}; expected one of {DEVICES}.")
    forced = forced_dtype()
    if forced:
        return DTYPES[forced]
    return torch.float16 if device == "cuda" else torch.float32


def dtype_reason(device: str) -> str:
    """Why :func:`get_dtype` picks what it picks on ``device``, in a few words (``cu.setup()`` prints it)."""
    forced = forced_dtype()
    if forced:
        note = f"COURSE_DTYPE={forced}"
        if device == "cpu" and forced == "float16":
            note += ": a CPU computes float16 slowly; the course's tests use it to run what a GPU runs"
        return note
    if device == "cuda":
        return "float16 on a GPU: half the memory, tensor cores"
    return f"float32 on {device}: no fast float16 there"


def describe_device(device: str) -> str:
    """A one-line human description of ``device``, e.g. ``"cuda (Tesla T4, 15.8 GB)"``."""
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        return f"cuda ({props.name}, {props.total_memory / 2**30:.1f} GB)"
    if device == "mps":
        return "mps (Apple silicon GPU)"
    return f"cpu ({torch.get_num_threads()} threads)"


def cast(target, dtype: torch.dtype, device: str | None = None):
    """Move ``target`` to ``device`` (if given) and cast it to ``dtype`` only where its dtype differs.

    diffusers 0.42 logs a note about "modules ... kept in float32" on every dtype cast of a model, needed or not;
    casting only when the dtype differs keeps the output free of it (and saves a copy of the weights).

    Args:
        target (`DiffusionPipeline` or `torch.nn.Module`): a pipeline (its ``dtype`` is its models') or a model.
        dtype (`torch.dtype`): the dtype wanted, e.g. ``torch.float32``.
        device (`str`, *optional*): also move it there, e.g. ``"cuda"``.

    Returns:
        ``target``, moved and cast (pipelines and models are changed in place).
    """
    current = getattr(target, "dtype", None) or next(target.parameters()).dtype
    if current == dtype:
        return target if device is None else target.to(device)
    return target.to(dtype=dtype) if device is None else target.to(device, dtype)


def fast_layout(target, device: str, dtype: torch.dtype):
    """Put convolutions' weights in channels-last memory layout where that is the fast path: float16 on a CPU.

    A CPU without float16 hardware runs float16 convolutions through a slow generic kernel in PyTorch's default
    layout, and through a much faster one in channels-last (measured on the course's 2-core CPU, one thread:
    `tiny`'s VAE decode 1,514 ms -> 79 ms, its UNet at batch 2 126 ms -> 64 ms, a 10-step ControlNet picture
    3.0 s -> 1.4 s; float32 sums inside all). Elsewhere nothing changes. Only the course's tests run float16 on a CPU
    (``COURSE_DTYPE``).

    Args:
        target (`DiffusionPipeline` or `torch.nn.Module`): a pipeline (its ``unet``, ``vae`` and ``controlnet``, where
            it has them, are changed) or a model.
        device (`str`): where it runs.
        dtype (`torch.dtype`): its dtype.

    Returns:
        ``target``.
    """
    if device == "cpu" and dtype == torch.float16:
        models = (
            [target]
            if isinstance(target, torch.nn.Module)
            else [getattr(target, n, None) for n in ("unet", "vae", "controlnet")]
        )
        for model in models:
            if model is not None:
                model.to(memory_format=torch.channels_last)
    return target


MPS_SLICING_BELOW = 64 * 2**30  # bytes of RAM: diffusers' MPS guide recommends attention slicing below 64 GB


def total_ram() -> int | None:
    """This machine's memory in bytes (``sysconf``: Linux and macOS), or `None` where it cannot be read (Windows)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def mps_attention_slicing(pipe, device: str, ram: int | None = None, say=print):
    """On Apple silicon (``mps``) with under 64 GB of memory, compute attention in slices, as diffusers' MPS guide
    recommends (its speed there is very sensitive to memory pressure; slicing costs about 20% where memory is
    plentiful). Elsewhere nothing changes.

    Args:
        pipe (`DiffusionPipeline`): a pipeline with ``enable_attention_slicing``.
        device (`str`): where it runs.
        ram (`int`, *optional*): the machine's memory in bytes; default :func:`total_ram`.
        say (`Callable[[str], None]`, defaults to `print`): where the choice is reported.

    Returns:
        ``pipe``.
    """
    if device != "mps" or not hasattr(pipe, "enable_attention_slicing"):
        return pipe
    ram = total_ram() if ram is None else ram
    if ram is None or ram < MPS_SLICING_BELOW:
        pipe.enable_attention_slicing()
        size = "unknown" if ram is None else f"{ram / 2**30:.0f} GiB"
        say(
            f"course_utils: mps with {size} of memory (< 64 GB): attention slicing on, as diffusers' MPS guide recommends"
        )
    return pipe
