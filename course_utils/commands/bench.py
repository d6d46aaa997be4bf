"""Time per image and peak memory on the machine at hand: lesson 9's numbers and ``python -m course_utils bench``.

    python -m course_utils bench [--full] [--profile P] [--repeats N] [--json PATH] [--markdown PATH]

Everything here is *measured* where it runs, never quoted: the median of a few repeats after
one warm-up call, and the peak memory of those calls. Four groups of rows:

* ``speed`` - diffusers' out-of-the-box call (float32, the pipeline's own scheduler, 50 steps)
  against the course's recommended settings (half precision where the device has it, PyTorch's
  SDPA attention, DPM-Solver++ with 20 steps), and LCM at 4 steps without guidance;
* ``memory`` - each memory lever alone, on top of the recommended settings: attention slicing,
  VAE slicing (a batch of 4), VAE tiling (a decode twice the image side: 1024x1024 on `sd15`), model and sequential
  CPU offload (CUDA only), channels-last, and ``torch.compile`` (``--full`` only);
* ``full_size`` - SD 1.5's full-size architecture with random weights (`sd15-random`): one text
  encode, one UNet step, one 512x512 VAE decode and one decode by the tiny autoencoder (TAESD's
  architecture), so "how long does one image take here" is answered on any machine;
* ``laptop`` (``--full`` only) - a complete 512x512 image at full size with LCM, 4 steps, no
  guidance and the tiny autoencoder: the course's fastest CPU recipe, end to end.

Memory is what each device can report: on CUDA ``torch.cuda.max_memory_allocated`` (reset per
row: the weights plus the largest activations); on a Linux CPU the process's peak resident set
(``VmHWM``, reset per row through ``/proc/self/clear_refs``: Python, the libraries and every
model still loaded count too, so compare rows, not machines); elsewhere nothing (``None``).
On `tiny` each row that changes the image also gets a quality score: the share of images whose
colour and shape ``world.classify`` reads back as asked (``scores.drawn_right``).

The measuring primitives are in :mod:`course_utils.measuring`, the full-size parts and estimates in
:mod:`course_utils.full_size`, the settings and the levers in :mod:`course_utils.levers` (lesson 9 reads the same
table); this module holds the rows, and the command's run and table.
"""

import argparse
import datetime
import gc
import json
import logging
import platform
import sys
from dataclasses import asdict
from pathlib import Path

import torch

from .. import scores
from ..device import describe_device, get_device, get_dtype
from ..errors import CourseError
from ..full_size import LCM_STEPS, RECOMMENDED_STEPS, estimates, full_size_parts, laptop_row
from ..levers import LEVERS, OFFLOAD, big_decode_rows, compile_row, measure_lever, out_of_the_box, recommended
from ..measuring import GIB, Row, measure, not_measured

# --- the rows --------------------------------------------------------------------------------


def speed_rows(pipe, device: str, profile: str, repeats: int = 3) -> list[Row]:
    """Out of the box vs recommended vs LCM at 4 steps: time per image, same size, same run.

    Args:
        pipe: the profile's text-to-image pipeline (left in the recommended settings).
        device (`str`): its device.
        profile (`str`): ``"tiny"`` adds a quality score to every row; ``"sd15"`` loads LCM-LoRA.
        repeats (`int`): timed calls per row.

    Returns:
        `list[Row]`: ``out of the box``, ``recommended``, ``LCM, 4 steps``.
    """
    from diffusers import LCMScheduler

    from ..models.profiles import default_settings, prompt

    size = {k: v for k, v in default_settings(profile).items() if k in ("height", "width")}
    guidance = default_settings(profile)["guidance_scale"]
    text = prompt("main", profile)
    loaded = pipe.scheduler
    rows = []

    def run(**kw):
        return lambda: pipe(text, generator=torch.Generator().manual_seed(0), **size, **kw)

    kw = out_of_the_box(pipe, device, loaded)
    rows.append(
        measure(
            run(**kw),
            device,
            "speed",
            "out of the box",
            repeats,
            note=f"float32, {type(loaded).__name__}, {kw['num_inference_steps']} steps, guidance 7.5",
        )
    )
    if profile == "tiny":
        rows[-1].score = scores.drawn_right(pipe, **size, **kw)
    kw = recommended(pipe, device)
    rows.append(
        measure(
            run(guidance_scale=guidance, **kw),
            device,
            "speed",
            "recommended",
            repeats,
            note=f"{str(pipe.unet.dtype).replace('torch.', '')}, SDPA, DPM-Solver++, {kw['num_inference_steps']} steps, guidance {guidance}",
        )
    )
    if profile == "tiny":
        rows[-1].score = scores.drawn_right(pipe, **size, guidance_scale=guidance, **kw)

    # LCM: 4 steps and guidance 1 (one UNet call per step, no unconditional half of the batch)
    dpm = pipe.scheduler
    pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
    lora = profile == "sd15"
    if lora:
        from ..models import hub

        pipe.load_lora_weights(hub.lora_source(), adapter_name="lcm")
        pipe.fuse_lora()
    note = (
        "LCM-LoRA fused" if lora else "no LCM-LoRA for this profile: the 4-step schedule alone"
    ) + f", {LCM_STEPS} steps, guidance 1"
    rows.append(
        measure(
            run(num_inference_steps=LCM_STEPS, guidance_scale=1.0), device, "speed", "LCM, 4 steps", repeats, note=note
        )
    )
    if profile == "tiny":
        rows[-1].score = scores.drawn_right(pipe, **size, num_inference_steps=LCM_STEPS, guidance_scale=1.0)
    if lora:
        pipe.unfuse_lora()
        pipe.unload_lora_weights()
    pipe.scheduler = dpm
    return rows


def memory_rows(pipe, device: str, profile: str, repeats: int = 3, full: bool = False) -> list[Row]:
    """Each memory lever of :data:`course_utils.levers.LEVERS` alone, on top of the recommended settings.

    Then a decode twice the image's side without and with VAE tiling, ``torch.compile`` (``full`` only) and, last,
    the CPU-offload levers (:data:`course_utils.levers.OFFLOAD`, CUDA only).

    Args:
        pipe: the profile's text-to-image pipeline in the recommended settings (restored after).
        device (`str`): its device.
        profile (`str`): the profile (sets the image size; `sd15`'s big decode is 1024x1024).
        repeats (`int`): timed calls per row.
        full (`bool`): also ``torch.compile`` (minutes of compiling).

    Returns:
        `list[Row]`.
    """
    from ..models.profiles import default_settings, prompt

    settings = default_settings(profile)
    size = {k: settings[k] for k in ("height", "width")}
    kw = dict(num_inference_steps=RECOMMENDED_STEPS, guidance_scale=settings["guidance_scale"], **size)
    text = prompt("main", profile)

    def images(n=1):
        return pipe(text, num_images_per_prompt=n, generator=torch.Generator().manual_seed(0), **kw)

    rows = [measure_lever(lever, pipe, images, device, repeats) for lever in LEVERS]
    rows += big_decode_rows(pipe.vae, device, 2 * settings["height"], repeats)  # 1024x1024 on sd15
    if full:
        rows.append(compile_row(pipe, device, images, repeats))
    else:
        why = "only with --full / COURSE_BENCH=full (compiling takes minutes)"
        rows.append(not_measured("memory", "torch.compile UNet", why))
    rows += [measure_lever(lever, pipe, images, device, repeats) for lever in OFFLOAD]
    return rows


# --- the whole run ---------------------------------------------------------------------------


def machine() -> dict:
    """What the numbers were measured on: device, dtype, threads, processor, library versions, date."""
    import diffusers
    import transformers

    device = get_device()
    info = dict(
        device=describe_device(device),
        dtype=str(get_dtype(device)).replace("torch.", ""),
        processor=platform.processor() or platform.machine(),
        system=platform.platform(),
        cpu_threads=torch.get_num_threads(),
        python=platform.python_version(),
        torch=torch.__version__,
        diffusers=diffusers.__version__,
        transformers=transformers.__version__,
        date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    )
    if device == "cuda":
        info["cuda"] = torch.version.cuda
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / GIB, 1)
    return info


PARTS = ("speed", "memory", "full_size")


def run(profile: str | None = None, full: bool = False, repeats: int | None = None, parts=PARTS) -> dict:
    """Measure everything this module measures on this machine.

    Args:
        profile (`str`, *optional*): whose text-to-image pipeline to measure; default the course's choice.
        full (`bool`, defaults to `False`): more repeats, ``torch.compile``, and the full-size laptop image.
        repeats (`int`, *optional*): timed calls per row; default 3 (``full``: 5) on the profile,
            1 (``full``: 3) at full size.
        parts (`tuple[str]`, defaults to :data:`PARTS`): which groups of rows to measure.

    Returns:
        `dict`: ``machine``, ``profile``, ``rows`` (as dicts), ``estimates`` (seconds per 512x512 image).
    """
    from ..models.registry import choose, load_pipeline

    choice = choose("text2img", profile)
    device = choice.device
    small = repeats or (5 if full else 3)
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise CourseError(f"Unknown parts {sorted(unknown)}; choose from {PARTS}.")
    rows, seconds = [], {}
    if "speed" in parts or "memory" in parts:
        pipe = load_pipeline("text2img", choice.profile, device)
        pipe.set_progress_bar_config(disable=True)
        if "speed" in parts:
            rows += speed_rows(pipe, device, choice.profile, small)
        if "memory" in parts:
            recommended(pipe, device)
            rows += memory_rows(pipe, device, choice.profile, small, full)
        del pipe
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
    if "full_size" in parts:
        full_rows, seconds = full_size_parts(device, repeats=repeats or (3 if full else 1))
        rows += full_rows
        if full:
            rows.append(laptop_row(device, repeats or 3))
    return dict(
        machine=machine(),
        profile=choice.profile,
        full=full,
        rows=[asdict(r) for r in rows],
        estimates={k: round(v, 2) for k, v in estimates(seconds).items()} if seconds else {},
    )


def table(result: dict) -> str:
    """The rows as a Markdown table, with the speed-up of the recommended settings."""
    lines = [
        "| group | setting | s / call | peak GiB | added GiB | drawn right | note |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in result["rows"]:
        cells = [
            r["group"],
            r["name"],
            _fmt(r["seconds"], ".3g"),
            _fmt(r["peak_gib"], ".2f"),
            _fmt(r["added_gib"], ".2f"),
            "" if r["score"] is None else f"{r['score']:.0%}",
            r["note"],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    by_name = {r["name"]: r["seconds"] for r in result["rows"]}
    if by_name.get("out of the box") and by_name.get("recommended"):
        lines.append(
            f"\nRecommended settings: {by_name['out of the box'] / by_name['recommended']:.1f}x faster "
            f"per image than the out-of-the-box call (same size, same run)."
        )
    if result["estimates"]:
        lines.append("\nOne 512x512 image at SD 1.5's full size on this machine, added up from the parts:")
    for name, seconds in result["estimates"].items():
        lines.append(f"- {name}: {seconds:.1f} s")
    return "\n".join(lines)


def _fmt(value, spec: str) -> str:
    return "" if value is None else format(value, spec)


def main(argv=None) -> None:
    """``python -m course_utils bench``: measure, print a table, write JSON/Markdown if asked."""
    parser = argparse.ArgumentParser(
        prog="python -m course_utils bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", choices=["sd15", "tiny", "sd15-random"], help="default: the course's choice")
    parser.add_argument(
        "--full", action="store_true", help="more repeats, torch.compile, a whole full-size laptop image"
    )
    parser.add_argument("--repeats", type=int, help="timed calls per row (default 3, 5 with --full)")
    parser.add_argument(
        "--parts", default=",".join(PARTS), help="comma-separated groups to measure (default %(default)s)"
    )
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--markdown", help="write the table here")
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        raise CourseError(f"--repeats must be 1 or more, not {args.repeats}.")
    logging.basicConfig(level=logging.INFO, format="  %(message)s")  # each measurement as it runs (measuring.log)
    result = run(args.profile, args.full, args.repeats, tuple(p.strip() for p in args.parts.split(",") if p.strip()))
    text = table(result)
    print("machine:", ", ".join(f"{k}={v}" for k, v in result["machine"].items()))
    print(f"profile: {result['profile']}\n")
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1:])
