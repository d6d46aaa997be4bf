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
colour and shape ``world.classify`` reads back as asked.
"""
import argparse
import contextlib
import datetime
import functools
import gc
import json
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from . import scores
from .device import describe_device, fast_layout, get_device, get_dtype
from .errors import CourseError

GIB = 2**30
# Prompts of tiny's world used for the quality score: the evaluator's first six, every colour and shape once.
QUALITY_PROMPTS = tuple((prompt, color, shape) for prompt, color, shape, _ in scores.SEEN[:6])
RECOMMENDED_STEPS = 20  # DPM-Solver++ (2nd order, multistep) reaches a clean image in about 20 steps
OUT_OF_THE_BOX_STEPS = 50  # a diffusers pipeline's default num_inference_steps
LCM_STEPS = 4  # LCM-LoRA's model card: 2-8 steps, guidance 1-2
VERBOSE = False  # print each measurement as it starts and ends (the command line sets it)


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


# --- measuring -------------------------------------------------------------------------------

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
    if VERBOSE:
        print(f"  measuring {group}: {name} ...", end="", flush=True)
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
    if VERBOSE:
        print(f" {statistics.median(times):.3g} s", flush=True)
    return Row(group, name, statistics.median(times), _gib(peak),
               _gib(peak - before) if peak is not None and before is not None else None, repeats, note=note, times=times)


def _gib(n: int | None) -> float | None:
    return None if n is None else round(n / GIB, 3)


def not_measured(group: str, name: str, why: str) -> Row:
    """A row for a setting that cannot run here, saying why (e.g. CPU offload without a GPU)."""
    return Row(group, name, note=f"not measured: {why}")


def drawn_right(pipe, seeds=(0, 1), **settings) -> float:
    """On `tiny`: the share of images whose colour and shape ``world.classify`` reads back as asked.

    Args:
        pipe: a `tiny` text-to-image pipeline.
        seeds (`tuple[int]`, defaults to ``(0, 1)``): one image per prompt of :data:`QUALITY_PROMPTS` and seed.
        **settings: passed to the pipeline (``num_inference_steps``, ``guidance_scale``, ...).

    Returns:
        `float` in [0, 1].
    """
    from . import world

    prompts = [p for p, _, _ in QUALITY_PROMPTS for _ in seeds]
    generators = [torch.Generator().manual_seed(s) for _ in QUALITY_PROMPTS for s in seeds]
    images = pipe(prompts, generator=generators, **settings).images
    asked = [(c, s) for _, c, s in QUALITY_PROMPTS for _ in seeds]
    right = [(r := world.classify(im))["color"] == c and r["shape"] == s for im, (c, s) in zip(images, asked)]
    return sum(right) / len(right)


# --- the settings ----------------------------------------------------------------------------

def recommended(pipe, device: str) -> dict:
    """Put ``pipe`` in the course's recommended settings and return the call's keyword arguments.

    Half precision where the device has it (``course_utils.device.get_dtype``: float16 on CUDA),
    PyTorch's SDPA attention (diffusers' default processor with torch 2), DPM-Solver++ with
    :data:`RECOMMENDED_STEPS` steps.

    Args:
        pipe: a Stable Diffusion pipeline (changed in place: dtype, scheduler, attention).
        device (`str`): the device it runs on.

    Returns:
        `dict`: ``num_inference_steps`` for the call.
    """
    from diffusers import DPMSolverMultistepScheduler

    _to(pipe, device, get_dtype(device))
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
    _to(pipe, device, torch.float32)
    pipe.scheduler = scheduler
    return dict(num_inference_steps=OUT_OF_THE_BOX_STEPS)


def _to(pipe, device: str, dtype: torch.dtype) -> None:
    """Move ``pipe`` to ``device`` and cast it only if its dtype differs (a needless cast makes diffusers warn)."""
    pipe.to(device) if pipe.unet.dtype == dtype else pipe.to(device, dtype)


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

    from .models.profiles import default_settings, prompt

    size = {k: v for k, v in default_settings(profile).items() if k in ("height", "width")}
    guidance = default_settings(profile)["guidance_scale"]
    text = prompt("main", profile)
    loaded = pipe.scheduler
    rows = []

    def run(**kw):
        return lambda: pipe(text, generator=torch.Generator().manual_seed(0), **size, **kw)

    kw = out_of_the_box(pipe, device, loaded)
    rows.append(measure(run(**kw), device, "speed", "out of the box", repeats,
                        note=f"float32, {type(loaded).__name__}, {kw['num_inference_steps']} steps, guidance 7.5"))
    if profile == "tiny":
        rows[-1].score = drawn_right(pipe, **size, **kw)
    kw = recommended(pipe, device)
    rows.append(measure(run(guidance_scale=guidance, **kw), device, "speed", "recommended", repeats,
                        note=f"{str(pipe.unet.dtype).replace('torch.', '')}, SDPA, DPM-Solver++, {kw['num_inference_steps']} steps, guidance {guidance}"))
    if profile == "tiny":
        rows[-1].score = drawn_right(pipe, **size, guidance_scale=guidance, **kw)

    # LCM: 4 steps and guidance 1 (one UNet call per step, no unconditional half of the batch)
    dpm = pipe.scheduler
    pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
    lora = profile == "sd15"
    if lora:
        from .models import hub

        pipe.load_lora_weights(hub.lora_source(), adapter_name="lcm")
        pipe.fuse_lora()
    note = ("LCM-LoRA fused" if lora else "no LCM-LoRA for this profile: the 4-step schedule alone") + f", {LCM_STEPS} steps, guidance 1"
    rows.append(measure(run(num_inference_steps=LCM_STEPS, guidance_scale=1.0), device, "speed", "LCM, 4 steps", repeats, note=note))
    if profile == "tiny":
        rows[-1].score = drawn_right(pipe, **size, num_inference_steps=LCM_STEPS, guidance_scale=1.0)
    if lora:
        pipe.unfuse_lora()
        pipe.unload_lora_weights()
    pipe.scheduler = dpm
    return rows


def memory_rows(pipe, device: str, profile: str, repeats: int = 3, full: bool = False) -> list[Row]:
    """Each memory lever alone, on top of the recommended settings (``pipe`` must be in them).

    Args:
        pipe: the profile's text-to-image pipeline in the recommended settings (restored after).
        device (`str`): its device.
        profile (`str`): the profile (sets the image size; `sd15`'s big decode is 1024x1024).
        repeats (`int`): timed calls per row.
        full (`bool`): also ``torch.compile`` (minutes of compiling).

    Returns:
        `list[Row]`.
    """
    from .models.profiles import default_settings, prompt

    settings = default_settings(profile)
    size = {k: settings[k] for k in ("height", "width")}
    kw = dict(num_inference_steps=RECOMMENDED_STEPS, guidance_scale=settings["guidance_scale"], **size)
    text = prompt("main", profile)
    rows = []

    def image(n=1):
        return lambda: pipe(text, num_images_per_prompt=n, generator=torch.Generator().manual_seed(0), **kw)

    rows.append(measure(image(), device, "memory", "recommended (no lever)", repeats))
    pipe.enable_attention_slicing()
    rows.append(measure(image(), device, "memory", "attention slicing", repeats,
                        note="replaces SDPA by sliced attention (diffusers warns it can slow SDPA down)"))
    pipe.disable_attention_slicing()
    pipe.unet.set_default_attn_processor()
    pipe.vae.set_default_attn_processor()

    rows.append(measure(image(4), device, "memory", "batch of 4", repeats))
    pipe.vae.enable_slicing()
    rows.append(measure(image(4), device, "memory", "batch of 4 + VAE slicing", repeats, note="decodes one image at a time"))
    pipe.vae.disable_slicing()

    rows += big_decode_rows(pipe.vae, device, 2 * settings["height"], repeats)  # 1024x1024 on sd15

    pipe.unet.to(memory_format=torch.channels_last)
    rows.append(measure(image(), device, "memory", "channels-last UNet", repeats, note="a memory layout convolutions may prefer"))
    pipe.unet.to(memory_format=torch.contiguous_format)

    if full:
        rows.append(compile_row(pipe, device, image(), repeats))
    else:
        rows.append(not_measured("memory", "torch.compile UNet", "only with --full / COURSE_BENCH=full (compiling takes minutes)"))
    # last: offloading moves the weights around; nothing is measured after it
    if device == "cuda":
        for name, enable in (("model CPU offload", pipe.enable_model_cpu_offload),
                             ("sequential CPU offload", pipe.enable_sequential_cpu_offload)):
            enable()
            rows.append(measure(image(), device, "memory", name, repeats,
                                note="weights wait in CPU memory and move to the GPU when used"))
            pipe.remove_all_hooks()
            pipe.to(device)
    else:
        for name in ("model CPU offload", "sequential CPU offload"):
            rows.append(not_measured("memory", name, f"needs a GPU (it moves weights between the GPU and CPU memory); this is {device}"))

    return rows


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
    z = torch.randn(1, vae.config.latent_channels, pixels // factor, pixels // factor,
                    generator=torch.Generator().manual_seed(0)).to(device, vae.dtype)
    with torch.inference_mode():
        plain = vae.decode(z).sample
        rows = [measure(lambda: vae.decode(z), device, "memory", f"decode {pixels}x{pixels}", repeats)]
        vae.enable_tiling()
        tiled = vae.decode(z).sample
        change = (tiled.float().clamp(-1, 1) - plain.float().clamp(-1, 1)).abs().max().item() / 2 * 255  # pixels in [-1, 1]
        rows.append(measure(lambda: vae.decode(z), device, "memory", f"decode {pixels}x{pixels} + VAE tiling", repeats,
                            note=f"tiles of {vae.tile_sample_min_size} px; largest change {change:.0f}/255 (seams blended)"))
        vae.disable_tiling()
    return rows


def compile_row(pipe, device: str, call, repeats: int) -> Row:
    """``torch.compile`` on the UNet: the first call (compiling) in the note, then the median."""
    original = pipe.unet
    try:
        pipe.unet = torch.compile(original)
        start = time.perf_counter()
        call()
        synchronize(device)
        first = time.perf_counter() - start
        row = measure(call, device, "memory", "torch.compile UNet", repeats, warmup=0,
                      note=f"first call {first:.0f} s (compiling)")
    except Exception as err:  # no C++ compiler, unsupported device, ...
        row = not_measured("memory", "torch.compile UNet", f"{type(err).__name__}: {str(err).splitlines()[0][:120]}")
    pipe.unet = original
    return row


FULL_SIZE_PARTS = ("text encoder, 1 prompt", "UNet step, batch 1 (no guidance)", "UNet step, batch 2 (guidance)",
                   "VAE decode", "tiny autoencoder decode")


def full_size_models(device: str | torch.device, dtype: torch.dtype = torch.float32) -> dict:
    """SD 1.5's text encoder, UNet and VAE, and an ``AutoencoderTiny`` (TAESD's architecture), random weights.

    For timing only, and quick to build: the models are made on the ``meta`` device (shapes, no
    memory) and then filled with one block of random numbers, repeated and scaled by 1/sqrt(fan-in)
    per weight; normalisation weights are 1, biases 0 (drawing a billion fresh numbers, as
    ``from_config`` does, takes seconds on a CPU; a multiplication takes as long whatever the
    numbers are). CLIP's position ids are set to 0..76.

    Args:
        device (`str` or `torch.device`): where to build them; ``"meta"`` builds shapes only (no memory).
        dtype (`torch.dtype`, defaults to float32): their dtype.

    Returns:
        `dict`: ``text_encoder``, ``unet``, ``vae``, ``taesd``, in eval mode.
    """
    from diffusers import AutoencoderKL, AutoencoderTiny, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from .models import configs

    with torch.device("meta"):
        models = dict(text_encoder=CLIPTextModel(CLIPTextConfig(**configs.SD15_TEXT_ENCODER)),
                      unet=UNet2DConditionModel.from_config(configs.SD15_UNET),
                      vae=AutoencoderKL.from_config(configs.SD15_VAE), taesd=AutoencoderTiny())
    if str(device) != "meta":
        block = torch.randn(2**20, generator=torch.Generator().manual_seed(configs.RANDOM_WEIGHTS_SEED))
        for name in models:
            models[name] = models[name].to_empty(device=device)
            for pname, param in models[name].named_parameters():
                if param.dim() > 1:  # a linear or convolution weight, or an embedding table
                    _fill(param.data.view(-1), block, 1 / param[0].numel() ** 0.5)
                else:  # a normalisation's weight (1) or a bias (0)
                    param.data.fill_(1.0 if pname.endswith("weight") else 0.0)
            for bname, buffer in models[name].named_buffers():
                if not bname.endswith("position_ids"):  # CLIP's only buffer: 0, 1, ..., 76
                    raise CourseError(f"{name} has a buffer {bname} that full_size_models does not know how to fill.")
                buffer.copy_(torch.arange(buffer.shape[-1]).expand_as(buffer))
    for model in models.values():
        model.eval().requires_grad_(False)
        if dtype != torch.float32:  # (a cast to the same dtype makes diffusers log a note)
            model.to(dtype)
        fast_layout(model, str(device), dtype)  # float16 on a CPU: channels-last (see device.fast_layout)
    return models


def _fill(flat: torch.Tensor, block: torch.Tensor, scale: float) -> None:
    """Fill the 1-D tensor ``flat`` with ``block`` (repeated) times ``scale``."""
    for start in range(0, flat.numel(), block.numel()):
        piece = flat[start:start + block.numel()]
        piece.copy_(block[:piece.numel()]).mul_(scale)


def _part_calls(models: dict, device, dtype: torch.dtype, size: int, decode_size: int | None = None) -> dict:
    """One call of each part of :data:`FULL_SIZE_PARTS` for a ``size`` x ``size`` image (decoders: ``decode_size``)."""
    te, unet, vae, taesd = models["text_encoder"], models["unet"], models["vae"], models["taesd"]
    decode_size = decode_size or size
    ids = torch.zeros(1, 77, dtype=torch.long, device=device)
    emb = torch.zeros(1, 77, 768, device=device, dtype=dtype)
    x = torch.zeros(1, 4, size // 8, size // 8, device=device, dtype=dtype)  # the latents of one image
    z = torch.zeros(1, 4, decode_size // 8, decode_size // 8, device=device, dtype=dtype)
    if str(device) != "meta":
        for tensor in (emb, x, z):
            tensor.normal_()
    t = torch.tensor(500, device=device)
    return dict(zip(FULL_SIZE_PARTS, (
        lambda: te(ids),
        lambda: unet(x, t, emb),
        lambda: unet(torch.cat([x, x]), t, torch.cat([emb, emb])),
        lambda: vae.decode(z),
        lambda: taesd.decode(z),
    )))


@functools.lru_cache
def part_flops(size: int = 512) -> dict:
    """Floating-point operations of each full-size part for a ``size`` x ``size`` image, counted, not run.

    The models are built on PyTorch's ``meta`` device (shapes only, no memory, no arithmetic) and
    ``torch.utils.flop_counter.FlopCounterMode`` adds up their matrix products and convolutions.

    Args:
        size (`int`, defaults to 512): image side in pixels (latents are 8 times smaller).

    Returns:
        `dict`: FLOPs per name of :data:`FULL_SIZE_PARTS` (the UNet: about 8.0e11 per image at 512x512).
    """
    from torch.utils.flop_counter import FlopCounterMode

    counts = {}
    for name, call in _part_calls(full_size_models("meta"), "meta", torch.float32, size).items():
        with FlopCounterMode(display=False) as counter:
            call()
        counts[name] = counter.get_total_flops()
    return counts


def unet_flops(size: int = 512) -> int:
    """FLOPs of one full-size SD 1.5 UNet call on one ``size`` x ``size`` image (counted on ``meta``, see :func:`part_flops`)."""
    return part_flops(size)["UNet step, batch 1 (no guidance)"]


def full_size_parts(device: str, dtype: torch.dtype | None = None, repeats: int = 1, warmup: int = 1,
                    guidance_batch: bool = True, decode_size: int = 512) -> tuple[list[Row], dict]:
    """SD 1.5's full-size parts with random weights: one text encode, one UNet step, the decodes.

    Random weights take exactly as long as trained ones (the same multiplications), so these are
    this machine's real costs of SD 1.5 (860 M UNet parameters, 123 M text encoder, 84 M VAE),
    not quotes. The tiny autoencoder has TAESD's architecture (2.4 M parameters) and random weights:
    its time is real, its image quality is not shown here.

    Args:
        device (`str`): where to run.
        dtype (`torch.dtype`, *optional*): default :func:`course_utils.device.get_dtype`.
        repeats (`int`, defaults to 1): timed calls per part.
        warmup (`int`, defaults to 1): untimed calls first (0: the first call is timed, a little slower).
        guidance_batch (`bool`, defaults to `True`): also time a UNet step at batch 2 (classifier-free
            guidance); without it :func:`estimates` takes twice the batch-1 step.
        decode_size (`int`, defaults to 512): image side of the two decodes. Below 512 (a quick run),
            their times are scaled to 512x512 by their counted FLOPs (:func:`part_flops`), and the
            note says so: the decoders are convolutions on large images, whose time grows with their
            FLOPs (measured here: 4.9 s at 256x256 x 4.0 = 20 s vs 21 s at 512x512). The UNet is always
            timed at 512x512: at smaller sizes it is slower than its FLOPs say (its 3.4 GB of weights
            are read once per step whatever the image size).

    Returns:
        `tuple[list[Row], dict]`: the rows, and seconds per part name at 512x512 (for :func:`estimates`).
    """
    dtype = dtype or get_dtype(device)
    models = full_size_models(device, dtype)
    peak = matmul_peak(device, dtype)
    rows = [Row("full_size", "matmul peak", note=f"{peak / 1e12:.3g} TFLOP/s ({str(dtype).replace('torch.', '')}, measured)")]
    flops, flops_small = part_flops(512), part_flops(decode_size) if decode_size != 512 else None
    seconds = {}
    with torch.inference_mode():
        for name, call in _part_calls(models, device, dtype, 512, decode_size).items():
            if "batch 2" in name and not guidance_batch:
                continue
            model = models["text_encoder" if "text" in name else "unet" if "UNet" in name else "taesd" if "tiny" in name else "vae"]
            n = sum(p.numel() for p in (model.decoder if name == "VAE decode" else model).parameters())
            scaled = flops_small is not None and "decode" in name
            size = decode_size if scaled else 512
            row = measure(call, device, "full_size", name, repeats, warmup,
                          note=f"{n / 1e6:.0f} M parameters, {size}x{size}, {(flops_small if scaled else flops)[name] / 1e9:.0f} GFLOP")
            if name.startswith("UNet"):  # throughput as a share of the measured matmul peak
                row.note += f" = {flops[name] / row.seconds / 1e12:.3g} TFLOP/s, {flops[name] / row.seconds / peak:.0%} of matmul peak"
            seconds[name] = row.seconds
            if scaled:
                seconds[name] = row.seconds * flops[name] / flops_small[name]
                row.note += f"; at 512x512 about {seconds[name]:.3g} s (scaled by FLOPs)"
            rows.append(row)
    return rows, seconds


def matmul_peak(device: str, dtype: torch.dtype, n: int | None = None, repeats: int = 5) -> float:
    """Measured floating-point operations per second of one large square matrix product.

    Args:
        device (`str`): where to multiply.
        dtype (`torch.dtype`): the dtype the course runs in there.
        n (`int`, *optional*): matrix side; default 8192 on CUDA, 2048 elsewhere.
        repeats (`int`, defaults to 5): timed products (median).

    Returns:
        `float`: FLOP/s (2 n^3 operations per product).
    """
    n = n or (8192 if device == "cuda" else 2048)
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    # as the models' linear layers compute it (a @ b.T): on a CPU without float16 hardware, a plain `a @ b` in
    # float16 takes a generic kernel 100 times slower (43 s vs 0.41 s at 2048 here), which no model layer uses
    row = measure(lambda: F.linear(a, b), device, "full_size", "matmul", repeats, warmup=2)
    return 2 * n**3 / row.seconds


def estimates(parts: dict) -> dict:
    """Seconds per 512x512 image, added up from :func:`full_size_parts`.

    Args:
        parts (`dict`): seconds per part name.

    Returns:
        `dict`: ``"out of the box (PNDM 50 steps, guidance)"``: 2 text encodes + 50 steps at batch 2
        (+1: PNDM's warm-up step) + one decode; ``"recommended (DPM-Solver++ 20 steps, guidance)"``;
        ``"laptop (LCM 4 steps, no guidance, tiny autoencoder)"``. Without a measured batch-2 step,
        twice the batch-1 step (what a CPU takes; a GPU takes less).
    """
    te, b1 = parts["text encoder, 1 prompt"], parts["UNet step, batch 1 (no guidance)"]
    b2 = parts.get("UNet step, batch 2 (guidance)") or 2 * b1
    decode, tiny_decode = parts["VAE decode"], parts["tiny autoencoder decode"]
    return {
        "out of the box (PNDM 50 steps, guidance)": 2 * te + (OUT_OF_THE_BOX_STEPS + 1) * b2 + decode,
        f"recommended (DPM-Solver++ {RECOMMENDED_STEPS} steps, guidance)": 2 * te + RECOMMENDED_STEPS * b2 + decode,
        f"laptop (LCM {LCM_STEPS} steps, no guidance, tiny autoencoder)": te + LCM_STEPS * b1 + tiny_decode,
    }


def laptop_row(device: str, repeats: int = 1) -> Row:
    """A whole 512x512 image on `sd15-random`: LCM, 4 steps, guidance 1, the tiny autoencoder as VAE."""
    from diffusers import AutoencoderTiny, LCMScheduler, StableDiffusionPipeline

    from .models import builders
    from .models.profiles import prompt

    dtype = get_dtype(device)
    pipe = builders.random_text2img(StableDiffusionPipeline, dtype)
    pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
    taesd = AutoencoderTiny()  # TAESD's architecture with random weights: its time, not its pictures
    pipe.vae = taesd if dtype == torch.float32 else taesd.to(dtype)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    text = prompt("main", "sd15-random")
    row = measure(lambda: pipe(text, height=512, width=512,
                               num_inference_steps=LCM_STEPS, guidance_scale=1.0, output_type="np"),
                  device, "laptop", "512x512 image, LCM 4 steps, tiny autoencoder", repeats,
                  note="full-size SD 1.5 architecture, random weights: time only")
    return row


# --- the whole run ---------------------------------------------------------------------------

def machine() -> dict:
    """What the numbers were measured on: device, dtype, threads, processor, library versions, date."""
    import diffusers
    import transformers

    device = get_device()
    info = dict(device=describe_device(device), dtype=str(get_dtype(device)).replace("torch.", ""),
                processor=platform.processor() or platform.machine(), system=platform.platform(),
                cpu_threads=torch.get_num_threads(), python=platform.python_version(), torch=torch.__version__,
                diffusers=diffusers.__version__, transformers=transformers.__version__,
                date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
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
    from .models.registry import choose, load_pipeline

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
    return dict(machine=machine(), profile=choice.profile, full=full, rows=[asdict(r) for r in rows],
                estimates={k: round(v, 2) for k, v in estimates(seconds).items()} if seconds else {})


def table(result: dict) -> str:
    """The rows as a Markdown table, with the speed-up of the recommended settings."""
    lines = ["| group | setting | s / call | peak GiB | added GiB | drawn right | note |", "|---|---|---:|---:|---:|---:|---|"]
    for r in result["rows"]:
        cells = [r["group"], r["name"], _fmt(r["seconds"], ".3g"), _fmt(r["peak_gib"], ".2f"), _fmt(r["added_gib"], ".2f"),
                 "" if r["score"] is None else f"{r['score']:.0%}", r["note"]]
        lines.append("| " + " | ".join(cells) + " |")
    by_name = {r["name"]: r["seconds"] for r in result["rows"]}
    if by_name.get("out of the box") and by_name.get("recommended"):
        lines.append(f"\nRecommended settings: {by_name['out of the box'] / by_name['recommended']:.1f}x faster "
                     f"per image than the out-of-the-box call (same size, same run).")
    if result["estimates"]:
        lines.append("\nOne 512x512 image at SD 1.5's full size on this machine, added up from the parts:")
    for name, seconds in result["estimates"].items():
        lines.append(f"- {name}: {seconds:.1f} s")
    return "\n".join(lines)


def _fmt(value, spec: str) -> str:
    return "" if value is None else format(value, spec)


def main(argv=None) -> None:
    """``python -m course_utils bench``: measure, print a table, write JSON/Markdown if asked."""
    parser = argparse.ArgumentParser(prog="python -m course_utils bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=["sd15", "tiny", "sd15-random"], help="default: the course's choice")
    parser.add_argument("--full", action="store_true", help="more repeats, torch.compile, a whole full-size laptop image")
    parser.add_argument("--repeats", type=int, help="timed calls per row (default 3, 5 with --full)")
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated groups to measure (default %(default)s)")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--markdown", help="write the table here")
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        raise CourseError(f"--repeats must be 1 or more, not {args.repeats}.")
    global VERBOSE
    VERBOSE = True
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
