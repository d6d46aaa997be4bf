"""SD 1.5's full-size parts with random weights, timed on the machine at hand: how long one image takes here (lesson 9, §5).

Random weights take exactly as long as trained ones (the same multiplications), so :func:`full_size_parts` gives this
machine's real costs of SD 1.5 without downloading it: one text encode, one UNet step, one VAE decode and one decode
by the tiny autoencoder (TAESD's architecture). :func:`part_flops` counts their floating-point operations on the
``meta`` device; :func:`estimates` adds the parts up to seconds per image for three recipes; :func:`laptop_row`
times a whole image with the fastest of them.
"""

import functools

import torch
import torch.nn.functional as F

from .device import cast, fast_layout, get_dtype
from .errors import CourseError
from .measuring import Row, measure

RECOMMENDED_STEPS = 20  # DPM-Solver++ (2nd order, multistep) reaches a clean image in about 20 steps
OUT_OF_THE_BOX_STEPS = 50  # a diffusers pipeline's default num_inference_steps
LCM_STEPS = 4  # LCM-LoRA's model card: 2-8 steps, guidance 1-2


FULL_SIZE_PARTS = (
    "text encoder, 1 prompt",
    "UNet step, batch 1 (no guidance)",
    "UNet step, batch 2 (guidance)",
    "VAE decode",
    "tiny autoencoder decode",
)


def full_size_models(
    device: str | torch.device, dtype: torch.dtype = torch.float32, only: tuple[str, ...] | None = None
) -> dict:
    """SD 1.5's text encoder, UNet and VAE, and an ``AutoencoderTiny`` (TAESD's architecture), random weights.

    For timing only, and quick to build: the models are made on the ``meta`` device (shapes, no
    memory) and then filled with one block of random numbers, repeated and scaled by 1/sqrt(fan-in)
    per weight; normalisation weights are 1, biases 0 (drawing a billion fresh numbers, as
    ``from_config`` does, takes seconds on a CPU; a multiplication takes as long whatever the
    numbers are). CLIP's position ids are set to 0..76.

    Args:
        device (`str` or `torch.device`): where to build them; ``"meta"`` builds shapes only (no memory).
        dtype (`torch.dtype`, defaults to float32): their dtype.
        only (`tuple[str]`, *optional*): build just these on ``device`` (e.g. ``("text_encoder", "taesd")``);
            the others stay on ``meta`` (shapes only). Default all four.

    Returns:
        `dict`: ``text_encoder``, ``unet``, ``vae``, ``taesd``, in eval mode.
    """
    from diffusers import AutoencoderKL, AutoencoderTiny, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from .models import configs

    with torch.device("meta"):
        models = dict(
            text_encoder=CLIPTextModel(CLIPTextConfig(**configs.SD15_TEXT_ENCODER)),
            unet=UNet2DConditionModel.from_config(configs.SD15_UNET),
            vae=AutoencoderKL.from_config(configs.SD15_VAE),
            taesd=AutoencoderTiny(),
        )
    if str(device) != "meta":
        block = torch.randn(2**20, generator=torch.Generator().manual_seed(configs.RANDOM_WEIGHTS_SEED))
        for name in only or tuple(models):
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
    for name, model in models.items():
        model.eval().requires_grad_(False)
        if not only or name in only:
            cast(model, dtype)
            fast_layout(model, str(device), dtype)  # float16 on a CPU: channels-last (see device.fast_layout)
    return models


def _fill(flat: torch.Tensor, block: torch.Tensor, scale: float) -> None:
    """Fill the 1-D tensor ``flat`` with ``block`` (repeated) times ``scale``."""
    for start in range(0, flat.numel(), block.numel()):
        piece = flat[start : start + block.numel()]
        piece.copy_(block[: piece.numel()]).mul_(scale)


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
    return dict(
        zip(
            FULL_SIZE_PARTS,
            (
                lambda: te(ids),
                lambda: unet(x, t, emb),
                lambda: unet(torch.cat([x, x]), t, torch.cat([emb, emb])),
                lambda: vae.decode(z),
                lambda: taesd.decode(z),
            ),
        )
    )


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


def full_size_parts(
    device: str,
    dtype: torch.dtype | None = None,
    repeats: int = 1,
    warmup: int = 1,
    guidance_batch: bool = True,
    decode_size: int = 512,
) -> tuple[list[Row], dict]:
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
    rows = [
        Row(
            "full_size", "matmul peak", note=f"{peak / 1e12:.3g} TFLOP/s ({str(dtype).replace('torch.', '')}, measured)"
        )
    ]
    flops, flops_small = part_flops(512), part_flops(decode_size) if decode_size != 512 else None
    seconds = {}
    with torch.inference_mode():
        for name, call in _part_calls(models, device, dtype, 512, decode_size).items():
            if "batch 2" in name and not guidance_batch:
                continue
            model = models[
                "text_encoder" if "text" in name else "unet" if "UNet" in name else "taesd" if "tiny" in name else "vae"
            ]
            n = sum(p.numel() for p in (model.decoder if name == "VAE decode" else model).parameters())
            scaled = flops_small is not None and "decode" in name
            size = decode_size if scaled else 512
            row = measure(
                call,
                device,
                "full_size",
                name,
                repeats,
                warmup,
                note=f"{n / 1e6:.0f} M parameters, {size}x{size}, {(flops_small if scaled else flops)[name] / 1e9:.0f} GFLOP",
            )
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
    row = measure(
        lambda: pipe(text, height=512, width=512, num_inference_steps=LCM_STEPS, guidance_scale=1.0, output_type="np"),
        device,
        "laptop",
        "512x512 image, LCM 4 steps, tiny autoencoder",
        repeats,
        note="full-size SD 1.5 architecture, random weights: time only",
    )
    return row
