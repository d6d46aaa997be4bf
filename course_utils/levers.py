"""Lesson 9's settings and memory levers: one table that the lesson reads and ``python -m course_utils bench`` runs.

* :func:`out_of_the_box` and :func:`recommended` - the two settings lesson 9, §3 compares (what
  ``from_pretrained`` gives vs half precision, SDPA attention and DPM-Solver++ with 20 steps);
* :data:`LEVERS` - each memory lever as a name, a switch on and a switch off (lesson 9, §4), and
  :data:`OFFLOAD`, the two CPU-offload levers, measured last because they move the weights around;
* :func:`measure_lever` - one lever on, one measurement, the lever off again;
* :func:`big_decode_rows` (VAE tiling on a decode larger than one tile) and :func:`compile_row` (``torch.compile``).

The measuring itself (warm-up, synchronise, median, peak memory) is :mod:`course_utils.measuring`.
"""

import time
from dataclasses import dataclass
from typing import Callable

import torch

from .device import cast, get_dtype
from .full_size import OUT_OF_THE_BOX_STEPS, RECOMMENDED_STEPS
from .measuring import Row, measure, not_measured, synchronize

# --- the two settings ------------------------------------------------------------------------


def recommended(pipe, device: str) -> dict:
    """Put ``pipe`` in the course's recommended settings and return the call's keyword arguments.

    Half precision where the device has it (``course_utils.device.get_dtype``: float16 on CUDA),
    PyTorch's SDPA attention (diffusers' default processor with torch 2), DPM-Solver++ with
    :data:`~course_utils.full_size.RECOMMENDED_STEPS` steps.

    Args:
        pipe: a Stable Diffusion pipeline (changed in place: dtype, scheduler, attention).
        device (`str`): the device it runs on.

    Returns:
        `dict`: ``num_inference_steps`` for the call.
    """
    from diffusers import DPMSolverMultistepScheduler

    cast(pipe, get_dtype(device), device)
    pipe.unet.set_default_attn_processor()  # AttnProcessor2_0, i.e. torch's scaled_dot_product_attention
    pipe.vae.set_default_attn_processor()
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    return dict(num_inference_steps=RECOMMENDED_STEPS)


def out_of_the_box(pipe, device: str, scheduler) -> dict:
    """Put ``pipe`` back to what ``from_pretrained`` gives: float32, its own scheduler; 50 steps.

    Args:
        pipe: the pipeline (changed in place).
        device (`str`): the device it runs on.
        scheduler: the scheduler it was loaded with (PNDM for SD 1.5).

    Returns:
        `dict`: ``num_inference_steps`` for the call (diffusers' default, 50).
    """
    cast(pipe, torch.float32, device)
    pipe.scheduler = scheduler
    return dict(num_inference_steps=OUT_OF_THE_BOX_STEPS)


# --- the levers --------------------------------------------------------------------------------


def _nothing(pipe) -> None:
    """The switch of a row that changes nothing (the baseline, a plain batch)."""


def _default_attention(pipe) -> None:
    """Attention slicing off: back to diffusers' default processors (SDPA) in the UNet and the VAE."""
    pipe.disable_attention_slicing()
    pipe.unet.set_default_attn_processor()
    pipe.vae.set_default_attn_processor()


def _no_offload(pipe) -> None:
    """CPU offload off: remove its hooks and put every model back on the GPU."""
    pipe.remove_all_hooks()
    pipe.to("cuda")


@dataclass(frozen=True)
class Lever:
    """One memory lever.

    Args:
        name (`str`): the row's name in the lesson's table and in ``bench``'s.
        on (`Callable[[pipe], None]`): switches it on.
        off (`Callable[[pipe], None]`): switches it off again (back to the recommended settings).
        images (`int`, defaults to 1): images per call (VAE slicing only matters for a batch).
        note (`str`): what the lever does, for the table.
        gpu_only (`bool`, defaults to `False`): it needs a CUDA GPU (CPU offload moves weights *from* one).
    """

    name: str
    on: Callable
    off: Callable
    images: int = 1
    note: str = ""
    gpu_only: bool = False


LEVERS = (  # each on top of the recommended settings, alone
    Lever("recommended (no lever)", _nothing, _nothing),
    Lever(
        "attention slicing",
        lambda pipe: pipe.enable_attention_slicing(),
        _default_attention,
        note="replaces SDPA by sliced attention (diffusers warns it can slow SDPA down)",
    ),
    Lever("batch of 4", _nothing, _nothing, images=4),
    Lever(
        "batch of 4 + VAE slicing",
        lambda pipe: pipe.vae.enable_slicing(),
        lambda pipe: pipe.vae.disable_slicing(),
        images=4,
        note="decodes one image at a time",
    ),
    Lever(
        "channels-last UNet",
        lambda pipe: pipe.unet.to(memory_format=torch.channels_last),
        lambda pipe: pipe.unet.to(memory_format=torch.contiguous_format),
        note="a memory layout convolutions may prefer",
    ),
)
OFFLOAD = (  # last: they move the weights between the GPU and CPU memory
    Lever(
        "model CPU offload",
        lambda pipe: pipe.enable_model_cpu_offload(),
        _no_offload,
        note="each model waits in CPU memory and moves to the GPU when used",
        gpu_only=True,
    ),
    Lever(
        "sequential CPU offload",
        lambda pipe: pipe.enable_sequential_cpu_offload(),
        _no_offload,
        note="layer by layer: the least GPU memory, the slowest",
        gpu_only=True,
    ),
)


def measure_lever(lever: Lever, pipe, images: Callable, device: str, repeats: int = 3, warmup: int = 1) -> Row:
    """Switch ``lever`` on, measure one call, switch it off again.

    Args:
        lever (`Lever`): one row of :data:`LEVERS` or :data:`OFFLOAD`.
        pipe: the pipeline, in the recommended settings (left in them).
        images (`Callable[[int], Any]`): ``images(n)`` makes ``n`` images in one call of ``pipe``.
        device (`str`): its device.
        repeats (`int`, defaults to 3): timed calls; the median is kept.
        warmup (`int`, defaults to 1): untimed calls first (0 once the pipeline has run many times).

    Returns:
        `Row`: the measurement, or a row that says why it was not measured (a GPU lever on another device).
    """
    if lever.gpu_only and device != "cuda":
        return not_measured("memory", lever.name, f"needs a GPU to offload from; this is {device}")
    lever.on(pipe)
    try:
        return measure(lambda: images(lever.images), device, "memory", lever.name, repeats, warmup, lever.note)
    finally:
        lever.off(pipe)


def big_decode_rows(vae, device: str, pixels: int, repeats: int = 3) -> list[Row]:
    """A ``pixels`` x ``pixels`` VAE decode without and with tiling, and how far tiling moves the pixels.

    Args:
        vae (`AutoencoderKL`): the pipeline's VAE.
        device (`str`): its device.
        pixels (`int`): image side, e.g. 1024 for SD 1.5 (a 128x128 latent).
        repeats (`int`): timed calls per row.

    Returns:
        `list[Row]`: ``decode NxN`` and ``decode NxN + VAE tiling`` (its note: the largest pixel change).
    """
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    z = torch.randn(
        1, vae.config.latent_channels, pixels // factor, pixels // factor, generator=torch.Generator().manual_seed(0)
    ).to(device, vae.dtype)
    with torch.inference_mode():
        plain = vae.decode(z).sample
        rows = [measure(lambda: vae.decode(z), device, "memory", f"decode {pixels}x{pixels}", repeats)]
        vae.enable_tiling()
        tiled = vae.decode(z).sample
        # pixels in [-1, 1]: half the range is 255 levels
        change = (tiled.float().clamp(-1, 1) - plain.float().clamp(-1, 1)).abs().max().item() / 2 * 255
        rows.append(
            measure(
                lambda: vae.decode(z),
                device,
                "memory",
                f"decode {pixels}x{pixels} + VAE tiling",
                repeats,
                note=f"tiles of {vae.tile_sample_min_size} px; largest change {change:.0f}/255 (seams blended)",
            )
        )
        vae.disable_tiling()
    return rows


def compile_row(pipe, device: str, call: Callable, repeats: int) -> Row:
    """``torch.compile`` on the UNet: the first call (compiling) in the note, then the median.

    Args:
        pipe: the pipeline (its UNet is compiled for the measurement, then put back).
        device (`str`): its device.
        call (`Callable[[], Any]`): one image with the pipeline.
        repeats (`int`): timed calls after the first.

    Returns:
        `Row`: the measurement, or why it could not be made (no C++ compiler, an unsupported device, ...).
    """
    original = pipe.unet
    try:
        pipe.unet = torch.compile(original)
        start = time.perf_counter()
        call()
        synchronize(device)
        first = time.perf_counter() - start
        row = measure(
            call,
            device,
            "memory",
            "torch.compile UNet",
            repeats,
            warmup=0,
            note=f"first call {first:.0f} s (compiling)",
        )
    except Exception as err:  # no C++ compiler, unsupported device, ...
        row = not_measured("memory", "torch.compile UNet", f"{type(err).__name__}: {str(err).splitlines()[0][:120]}")
    pipe.unet = original
    return row
