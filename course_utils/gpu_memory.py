"""Peak GPU memory of SD 1.5 work, estimated on a machine without a GPU (lesson 9's T4 table).

"CUDA out of memory on a 16 GB Colab GPU - do I need a bigger one?" A GPU answers by running the work and reading
``torch.cuda.max_memory_allocated()``. Without one, the same work runs on *fake* tensors and is counted:

1. **Fake tensors, counted** (:mod:`course_utils.gpu_memory_counter`): the models' parameters become tensors with a
   shape, dtype and device but no numbers, and every storage PyTorch creates is added up (rounded as CUDA's caching
   allocator rounds) until it is freed; the largest total is the estimate of ``max_memory_allocated``.
2. **The models and the work** (:mod:`course_utils.gpu_memory_work`): SD 1.5's exact configurations on the ``meta``
   device; one pipeline call is its text encoding, two denoising steps and its VAE decode, one training run two
   optimiser steps.
3. **Every lesson's heaviest cell** (this module): :data:`LESSONS`, estimated by :func:`lesson_table`, and the
   method checked against GPU measurements (:data:`CHECKS`, :func:`check_rows`).

What it leaves out: memory libraries allocate for themselves on a GPU, such as cuDNN's and cuBLAS's workspaces
(they come from the same allocator; our reading of why the estimates of :data:`CHECKS` come out 0.24-0.53 GiB
below the measurements, largest beside the float32 VAE decode), the CUDA context (a few hundred MB, outside
``max_memory_allocated`` but inside the card), and memory the caching allocator keeps without using it. So a T4
(15.0 GiB usable of its 16 GB) is judged against :data:`T4_LIMIT_GIB`, 14 GiB.

``python -m course_utils gpu-memory`` prints :func:`lesson_table` and the checks; lesson 9 shows them.
"""

import time
from dataclasses import dataclass
from typing import Callable

import torch

from .gpu_memory_counter import estimate, load
from .gpu_memory_work import (
    add_lora,
    decode,
    generate,
    pipeline_parts,
    sd15_model,
    train_controlnet,
    train_embedding,
    train_lora,
)

T4_LIMIT_GIB = 14.0  # a 16 GB T4 shows 15.0 GiB to PyTorch; leave room for the context and the workspaces
EIGHT_GB_LIMIT_GIB = 7.0  # an 8 GB card (8.0 GiB) less the same margin


# --- checked against a GPU ---------------------------------------------------------------------------------
# Measured once on an NVIDIA H100 (README, "Checked on a GPU": torch.cuda.max_memory_allocated(), float16, 25 steps,
# the full-size architectures with random weights, no safety checker): the method must come within 20% of each.
CHECKS = (
    (
        "text-to-image, 512x512",
        2.6,
        lambda: dict(pipe=pipeline_parts("text2img", safety_checker=False)),
        lambda m: generate(m["pipe"]),
    ),
    ("x4 upscaler, 128 -> 512", 3.0, lambda: dict(pipe=pipeline_parts("upscale")), lambda m: generate(m["pipe"])),
    (
        "inpainting, 512x512",
        2.6,
        lambda: dict(pipe=pipeline_parts("inpaint", safety_checker=False)),
        lambda m: generate(m["pipe"]),
    ),
)


def check_rows() -> list[dict]:
    """:data:`CHECKS` estimated here (a few seconds each on a CPU).

    Returns:
        `list[dict]`: per check ``what``, ``measured_gib`` (H100), ``estimate_gib`` and ``error`` (a share: ``-0.1``
        is 10% below the measurement).
    """
    rows = []
    for what, measured, parts, work in CHECKS:
        found = estimate(parts(), work)
        rows.append(
            dict(
                what=what,
                measured_gib=measured,
                estimate_gib=found.peak_gib,
                error=round(found.peak_gib / measured - 1, 3),
            )
        )
    return rows


# --- every lesson's heaviest cell ----------------------------------------------------------------------------
@dataclass
class Cell:
    """A lesson's heaviest cell on `sd15`, as its code runs on a GPU in float16 at 512x512 (the profile's default).

    Attributes:
        lesson (`str`): ``"01"`` .. ``"11"``.
        where (`str`): the section of the lesson.
        what (`str`): what is on the GPU and what runs.
        parts (`Callable[[], dict]`): every model the lesson holds at that moment, by pipeline (on ``meta``).
        work (`Callable[[dict], None]`): the cell's heaviest work.
        prepare (`Callable[[dict], None]`, *optional*): done to the models before they are loaded (a LoRA).
    """

    lesson: str
    where: str
    what: str
    parts: Callable[[], dict]
    work: Callable[[dict], None]
    prepare: Callable[[dict], None] | None = None


def _pipe(kind: str = "text2img", checker: bool = True) -> dict:
    return pipeline_parts(kind, safety_checker=checker)


def _random_full_size(parts: dict) -> None:
    """full_size.full_size_models on the GPU: SD 1.5's text encoder, UNet, VAE and TAESD built in float32, then cast."""
    from diffusers import AutoencoderTiny

    with torch.device("meta"):
        taesd = AutoencoderTiny()
    built = dict(
        te=sd15_model("text_encoder", torch.float32),
        unet=sd15_model("unet", torch.float32),
        vae=sd15_model("vae", torch.float32),
        taesd=taesd,
    )
    load(built)
    del built


def _lesson_10(parts: dict) -> None:
    """Lesson 10's textual inversion with the LoRA run's leftovers held: its gradients and AdamW state."""
    optimizer = train_lora(parts["pipe"], steps=1)
    # one step: a pass's peak does not grow with the steps, and Adam's state for one row is 6 KB
    train_embedding(parts["ti_pipe"], images=8, batch=2, steps=1)
    del optimizer


def _lesson_11(parts: dict) -> None:
    """Lesson 11's own ControlNet training, beside the pipeline with its trained ControlNet."""
    train_controlnet(parts["pipe"], parts["student"], steps=1)


LESSONS = (
    Cell(
        "01",
        "§1, the three lines",
        "two SD 1.5 pipelines (the course's and `three`), each with its safety checker; one image",
        lambda: dict(pipe=_pipe(), three=_pipe()),
        lambda m: generate(m["three"]),
    ),
    Cell(
        "02",
        "§9.2, swap and mix two words",
        "the pipeline, a second copy of its models loaded one by one (`assembled`, no checker), 3 images in one call",
        lambda: dict(pipe=_pipe(), assembled=_pipe(checker=False)),
        lambda m: generate(m["assembled"], images=3),
    ),
    Cell(
        "03",
        "§6, watch it happen",
        "the pipeline; 12 latents decoded, 4 per VAE call",
        lambda: dict(pipe=_pipe()),
        lambda m: decode(m["pipe"], 12),
    ),
    Cell(
        "04",
        "§1, img2img",
        "the img2img pipeline; one image from a sketch",
        lambda: dict(pipe=_pipe()),
        lambda m: generate(m["pipe"], init_image=True),
    ),
    Cell(
        "05",
        "§4, the guidance sweep",
        "the pipeline; 5 latents decoded, 4 per VAE call",
        lambda: dict(pipe=_pipe()),
        lambda m: decode(m["pipe"], 5),
    ),
    Cell(
        "06",
        "§2, upscale",
        "the x4 upscaler (VAE in float32); 112x72 -> 448x288",
        lambda: dict(pipe=_pipe("upscale")),
        lambda m: generate(m["pipe"], size=288, width=448),
    ),
    Cell(
        "07",
        "§3, the single file",
        "the Counterfeit folder's pipeline (its folders hold no safety checker) "
        "and the same model from one file, while the file loads",
        lambda: dict(folder=_pipe(checker=False), file=_pipe(checker=False)),
        lambda m: None,
    ),
    Cell(
        "08",
        "§5, blending with a plain model",
        "the inpainting pipeline and a text-to-image pipeline; one inpainting",
        lambda: dict(pipe=_pipe("inpaint"), text2img=_pipe()),
        lambda m: generate(m["pipe"]),
    ),
    Cell(
        "09",
        "§5, SD 1.5's full-size parts",
        "the pipeline, and SD 1.5's four timing models built in float32",
        lambda: dict(pipe=_pipe()),
        _random_full_size,
    ),
    Cell(
        "10",
        "§10, textual inversion",
        "three pipelines (the LoRA's, `fresh`, `ti_pipe`), the LoRA's gradients "
        "and AdamW state; 8 crops, 2 per pass, gradient checkpointing",
        lambda: dict(pipe=_pipe(), fresh=_pipe(), ti_pipe=_pipe()),
        _lesson_10,
        lambda m: add_lora(m["pipe"]),
    ),
    Cell(
        "11",
        "§7, train your own",
        "the ControlNet pipeline (SD 1.5 with the canny ControlNet), §3's fresh copy (`fresh`), and a third ControlNet "
        "training in float32 (AdamW), 1 picture of 512x512 per step, gradient checkpointing in it and the UNet",
        lambda: dict(
            pipe=dict(_pipe(), controlnet=sd15_model("controlnet")),
            fresh=sd15_model("controlnet"),
            student=sd15_model("controlnet", torch.float32),
        ),
        _lesson_11,
    ),
)


def lesson_table(lessons=LESSONS) -> list[dict]:
    """Every lesson's heaviest cell, estimated (``docs/gpu-memory.json`` holds the committed result).

    Args:
        lessons (`tuple[Cell]`, defaults to :data:`LESSONS`): the cells to estimate.

    Returns:
        `list[dict]`: per cell ``lesson``, ``where``, ``what``, ``peak_gib``, ``weights_gib``, ``fits_t4`` (at most
        :data:`T4_LIMIT_GIB`) and ``fits_8gb`` (at most :data:`EIGHT_GB_LIMIT_GIB`).
    """
    rows = []
    for cell in lessons:
        found = estimate(cell.parts(), cell.work, cell.prepare)
        rows.append(
            dict(
                lesson=cell.lesson,
                where=cell.where,
                what=cell.what,
                peak_gib=found.peak_gib,
                weights_gib=found.weights_gib,
                fits_t4=found.peak_gib <= T4_LIMIT_GIB,
                fits_8gb=found.peak_gib <= EIGHT_GB_LIMIT_GIB,
            )
        )
    return rows


def markdown(rows: list[dict], checks: list[dict]) -> str:
    """:func:`lesson_table` and :func:`check_rows` as the Markdown tables of ``docs/instructors.md``.

    Args:
        rows (`list[dict]`): from :func:`lesson_table`.
        checks (`list[dict]`): from :func:`check_rows`.

    Returns:
        `str`: two tables, a blank line between them.
    """
    lines = [
        "| lesson | heaviest cell on `sd15` | what is on the GPU, what runs | estimated peak GiB | "
        f"16 GB T4 (<= {T4_LIMIT_GIB:g}) | 8 GB card (<= {EIGHT_GB_LIMIT_GIB:g}) |",
        "|---|---|---|---:|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['lesson']} | {r['where']} | {r['what']} | {r['peak_gib']:.2f} | "
            f"{'fits' if r['fits_t4'] else '**no**'} | {'fits' if r['fits_8gb'] else '**no**'} |"
        )
    lines += [
        "",
        "| the method checked on | measured on an H100 GiB | estimated GiB | difference |",
        "|---|---:|---:|---:|",
    ]
    for c in checks:
        lines.append(f"| {c['what']} | {c['measured_gib']:.1f} | {c['estimate_gib']:.2f} | {c['error']:+.0%} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    """``python -m course_utils gpu-memory [--json PATH]``: print the estimates (and the checks), optionally as JSON.

    Args:
        argv (`list[str]`, *optional*): the arguments (default: the command line's).

    Returns:
        `int`: the exit status: 0 if every lesson fits a T4, else 1.
    """
    import argparse
    import json

    parser = argparse.ArgumentParser(
        prog="python -m course_utils gpu-memory",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", help="also write the rows and checks here")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    checks, rows = check_rows(), lesson_table()
    print(markdown(rows, checks))
    print(f"\n(estimated on fake tensors in {time.perf_counter() - start:.0f} s)")
    if args.json:
        from pathlib import Path

        Path(args.json).write_text(
            json.dumps(
                dict(
                    method="fake tensors, counted (course_utils/gpu_memory.py)",
                    t4_limit_gib=T4_LIMIT_GIB,
                    eight_gb_limit_gib=EIGHT_GB_LIMIT_GIB,
                    lessons=rows,
                    checks=checks,
                ),
                indent=2,
            )
            + "\n"
        )
    return 0 if all(r["fits_t4"] for r in rows) else 1
