"""Peak GPU memory of SD 1.5 work, estimated on a machine without a GPU (lesson 9's T4 table).

"CUDA out of memory on a 16 GB Colab GPU - do I need a bigger one?" A GPU answers by running the work and reading
``torch.cuda.max_memory_allocated()``. Without one, this module runs the same work on *fake* tensors and counts:

1. **Fake tensors.** The models are built with SD 1.5's exact configurations (``models.configs``) on PyTorch's
   ``meta`` device (shapes only), so that casts, LoRA adapters and ``cast_training_params`` work as usual; then every
   parameter and buffer becomes a ``FakeTensor`` (``torch._subclasses.FakeTensorMode``): a tensor with a shape,
   dtype and device but no numbers. Every operation still runs its shape logic and picks the kernel its device
   would; in particular attention goes through a fused kernel that never stores the ``N x N`` attention matrix, as
   PyTorch's flash / memory-efficient attention does on CUDA.
2. **Counting.** :class:`MemoryCounter`, a ``TorchDispatchMode``, sees every tensor each operation creates and
   adds its storage's size, rounded up to 512 bytes as CUDA's caching allocator rounds every block, until Python
   frees the storage. The largest total is the estimate of ``max_memory_allocated``: weights, activations kept for
   the backward pass, gradients, optimiser state, the batch.
3. **The work.** One pipeline call is its text encoding, two denoising steps (a loop's memory repeats every step)
   and its VAE decode; one training run is two optimiser steps (AdamW's state appears at the first).

What it leaves out: memory libraries allocate for themselves on a GPU, such as cuDNN's and cuBLAS's workspaces
(they come from the same allocator; our reading of why the estimates of :data:`CHECKS` come out 0.24-0.53 GiB
below the measurements, largest beside the float32 VAE decode), the CUDA context (a few hundred MB, outside
``max_memory_allocated`` but inside the card), and memory the caching allocator keeps without using it. So a T4
(15.0 GiB usable of its 16 GB) is judged against :data:`T4_LIMIT_GIB`, 14 GiB.

``python -m course_utils gpu-memory`` prints :func:`lesson_table` and the checks; lesson 9 shows them.
"""

import contextlib
import math
import time
import weakref
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from .models import configs

GIB = 2**30
BLOCK = 512  # CUDA's caching allocator rounds every allocation up to a multiple of 512 bytes
T4_LIMIT_GIB = 14.0  # a 16 GB T4 shows 15.0 GiB to PyTorch; leave room for the context and the workspaces
EIGHT_GB_LIMIT_GIB = 7.0  # an 8 GB card (8.0 GiB) less the same margin
SIZE = 512  # SD 1.5's image side
WORK_STEPS = 2  # denoising steps (or training steps) run per estimate: the memory of step 2 is that of step 50


# --- 1. counting -----------------------------------------------------------------------------------------
class MemoryCounter(TorchDispatchMode):
    """Counts the bytes of every tensor storage that PyTorch operations create, from creation until it is freed.

    Attributes:
        live (`int`): bytes in use now (each storage rounded up to :data:`BLOCK`).
        peak (`int`): the most ``live`` has been since the start or :meth:`reset_peak`.
    """

    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0
        self._storages = {}  # id(storage) -> a weak reference whose callback subtracts its bytes

    def reset_peak(self) -> None:
        """Start a new peak window (as ``torch.cuda.reset_peak_memory_stats``)."""
        self.peak = self.live

    def count(self, tensor: torch.Tensor) -> None:
        """Add ``tensor``'s storage (once) and subtract it when Python frees it."""
        storage = tensor.untyped_storage()
        key = id(storage)
        if key in self._storages:
            return
        nbytes = math.ceil(storage.nbytes() / BLOCK) * BLOCK
        self.live += nbytes
        self.peak = max(self.peak, self.live)

        def freed(_, nbytes=nbytes, key=key):
            self.live -= nbytes
            self._storages.pop(key, None)

        self._storages[key] = weakref.ref(storage, freed)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in tree_flatten(out)[0]:
            if isinstance(value, torch.Tensor):
                self.count(value)
        return out


@contextlib.contextmanager
def fake_gpu():
    """A context in which new tensors are fake (no numbers, no memory) and counted: yields the :class:`MemoryCounter`.

    Build models on ``torch.device("meta")`` outside it, then :func:`on_fake_device` inside it.
    """
    from torch._subclasses.fake_tensor import FakeTensorMode

    # allow_non_fake_inputs: schedulers' real constant tensors (timesteps, alphas) may meet fake ones
    with FakeTensorMode(allow_non_fake_inputs=True), MemoryCounter() as counter:
        yield counter


def on_fake_device(module: torch.nn.Module) -> torch.nn.Module:
    """Give every parameter and buffer of a ``meta`` module a fake CPU tensor of its shape and dtype (inside
    :func:`fake_gpu`, so the weights are counted). Parameters keep ``requires_grad``.

    (A module's ``.to()`` cannot do this: on fake tensors it must swap tensors, which their bookkeeping forbids.)
    """
    for sub in module.modules():
        for name, param in list(sub._parameters.items()):
            if param is not None:
                sub._parameters[name] = torch.nn.Parameter(
                    torch.empty(param.shape, dtype=param.dtype), requires_grad=param.requires_grad
                )
        for name, buffer in list(sub._buffers.items()):
            if buffer is not None:
                sub._buffers[name] = torch.zeros(buffer.shape, dtype=buffer.dtype)
    return module


# --- 2. the models, as on the Hub (shapes only) -------------------------------------------------------------
def sd15_model(name: str, dtype: torch.dtype = torch.float16) -> torch.nn.Module:
    """One of SD 1.5's models on the ``meta`` device, in ``dtype``, in eval mode, frozen.

    Args:
        name (`str`): ``"text_encoder"``, ``"unet"``, ``"inpaint_unet"`` (9 input channels), ``"vae"``,
            ``"safety_checker"``, or the x4 upscaler's ``"x4_text_encoder"``, ``"x4_unet"``, ``"x4_vae"``.
        dtype (`torch.dtype`, defaults to float16): the weights' dtype (the x4 VAE: pass float32, as the course loads it).
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPTextConfig, CLIPTextModel

    build = dict(
        text_encoder=lambda: CLIPTextModel(CLIPTextConfig(**configs.SD15_TEXT_ENCODER)),
        unet=lambda: UNet2DConditionModel.from_config(configs.SD15_UNET),
        inpaint_unet=lambda: UNet2DConditionModel.from_config(configs.SD15_INPAINT_UNET),
        vae=lambda: AutoencoderKL.from_config(configs.SD15_VAE),
        safety_checker=lambda: StableDiffusionSafetyChecker(CLIPConfig(**configs.SD15_SAFETY_CHECKER)),
        x4_text_encoder=lambda: CLIPTextModel(CLIPTextConfig(**configs.X4_UPSCALER_TEXT_ENCODER)),
        x4_unet=lambda: UNet2DConditionModel.from_config(configs.X4_UPSCALER_UNET),
        x4_vae=lambda: AutoencoderKL.from_config(configs.X4_UPSCALER_VAE),
    )
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # built in its dtype: a cast afterwards makes diffusers log a note
    try:
        with torch.device("meta"):
            model = build[name]()
    finally:
        torch.set_default_dtype(default)
    return model.eval().requires_grad_(False)


def pipeline_parts(kind: str = "text2img", safety_checker: bool = True, dtype: torch.dtype = torch.float16) -> dict:
    """The models a pipeline of ``kind`` holds on the GPU, on ``meta`` (put them on the fake GPU with :func:`load`).

    Args:
        kind (`str`): ``"text2img"`` (also img2img), ``"inpaint"`` or ``"upscale"``.
        safety_checker (`bool`, defaults to `True`): SD 1.5's Hub folders ship one and ``from_pretrained`` loads it.
        dtype (`torch.dtype`): the weights' dtype (the upscaler's VAE stays float32).
    """
    if kind == "upscale":
        return dict(
            text_encoder=sd15_model("x4_text_encoder", dtype),
            unet=sd15_model("x4_unet", dtype),
            vae=sd15_model("x4_vae", torch.float32),
        )
    parts = dict(
        text_encoder=sd15_model("text_encoder", dtype),
        unet=sd15_model("inpaint_unet" if kind == "inpaint" else "unet", dtype),
        vae=sd15_model("vae", dtype),
    )
    if safety_checker:
        parts["safety_checker"] = sd15_model("safety_checker", dtype)
    return parts


def load(parts: dict) -> dict:
    """Put every model of ``parts`` on the fake GPU (inside :func:`fake_gpu`; their weights are counted).

    ``parts`` maps names to models, or to dicts of models (several pipelines: ``{"pipe": {...}, "fresh": {...}}``).
    """
    for value in parts.values():
        load(value) if isinstance(value, dict) else on_fake_device(value)
    return parts


# --- 3. the work ----------------------------------------------------------------------------------------------
@torch.no_grad()
def generate(
    parts: dict,
    images: int = 1,
    size: int = SIZE,
    guidance: bool = True,
    steps: int = WORK_STEPS,
    init_image: bool = False,
    vae_slicing: bool = False,
    width: int | None = None,
) -> None:
    """What a Stable Diffusion pipeline call allocates: text, ``steps`` UNet calls, the decode, the safety checker.

    Args:
        parts (`dict`): from :func:`load` (``text_encoder``, ``unet``, ``vae``, optional ``safety_checker``); an
            ``inpaint_unet`` (9 channels) also encodes the masked image, the x4 UNet (7 channels) takes the image.
        images (`int`, defaults to 1): images in the batch (prompts x ``num_images_per_prompt``).
        size (`int`, defaults to 512): the output image's height in pixels.
        width (`int`, *optional*): its width (default: ``size``).
        guidance (`bool`, defaults to `True`): classifier-free guidance doubles the UNet's batch.
        steps (`int`): UNet calls.
        init_image (`bool`): encode an input image first (img2img).
        vae_slicing (`bool`): decode one image at a time (``pipe.vae.enable_slicing()``).
    """
    te, unet, vae = parts["text_encoder"], parts["unet"], parts["vae"]
    dtype = unet.dtype
    channels = unet.config.in_channels
    factor = 2 ** (len(vae.config.block_out_channels) - 1)  # 8 for SD 1.5, 4 for the x4 upscaler
    width = width or size
    h, w = size // factor, width // factor  # latents (the x4 upscaler's: 4 times smaller than its output)
    ids = torch.zeros(images, 77, dtype=torch.long)
    text = te(ids)[0]
    if guidance:
        text = torch.cat([te(ids)[0], text])  # the negative (empty) prompt's embeddings, then the prompt's
    extra = None
    if channels == 9 or init_image:  # encode the (masked) input image
        pixels = torch.zeros(images, 3, size, width, dtype=vae.dtype)
        encoded = vae.encode(pixels).latent_dist.sample() * vae.config.scaling_factor
        if channels == 9:
            mask = torch.zeros(images, 1, h, w, dtype=dtype)
            extra = torch.cat([mask, encoded.to(dtype)], dim=1)
        del pixels
    if channels == 7:  # the x4 upscaler: the (noised) low-resolution image itself, 4 times smaller
        extra = torch.zeros(images, 3, h, w, dtype=dtype)
    x = torch.randn(images, 4, h, w, dtype=dtype)
    kwargs = dict(class_labels=torch.full((2 * images if guidance else images,), 20)) if channels == 7 else {}
    for _ in range(steps):
        model_in = torch.cat([x, x]) if guidance else x
        if extra is not None:
            model_in = torch.cat([model_in, torch.cat([extra, extra]) if guidance else extra], dim=1)
        eps = unet(model_in, torch.tensor(500), text, **kwargs).sample
        if guidance:
            uncond, cond = eps.chunk(2)
            eps = uncond + 7.5 * (cond - uncond)
        x = x - 0.1 * eps  # a scheduler step: a few latent-sized tensors
        del model_in, eps
    x = (x / vae.config.scaling_factor).to(vae.dtype)
    if vae_slicing:
        image = torch.cat([vae.decode(x[i : i + 1]).sample for i in range(images)])
    else:
        image = vae.decode(x).sample
    if "safety_checker" in parts:  # CLIP's image tower on 224x224 copies of the images, the images still held
        checker = parts["safety_checker"]
        checker.vision_model(torch.zeros(images, 3, 224, 224, dtype=checker.dtype))
    del image


def add_lora(
    parts: dict,
    rank: int = 16,
    targets: tuple = ("to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2"),
    gradient_checkpointing: bool = True,
) -> None:
    """Prepare ``parts`` (on ``meta``) for LoRA training as diffusers' scripts (and lesson 10) do: a LoRA on the
    UNet's ``targets``, its parameters cast to float32 (``cast_training_params``), the rest frozen in half precision.

    Args:
        parts (`dict`): from :func:`pipeline_parts`, not yet loaded.
        rank (`int`, defaults to 16): the LoRA's rank (lesson 10 on SD 1.5).
        targets (`tuple`): the layers that get a LoRA (``new_concept.LORA_TARGETS``).
        gradient_checkpointing (`bool`, defaults to `True`): recompute the UNet's activations in the backward pass.
    """
    from diffusers.training_utils import cast_training_params
    from peft import LoraConfig

    unet = parts["unet"]
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=list(targets)))
    cast_training_params(unet, dtype=torch.float32)
    if gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()


def train_lora(parts: dict, batch: int = 2, size: int = SIZE, steps: int = WORK_STEPS) -> torch.optim.Optimizer:
    """What LoRA training steps allocate (after :func:`add_lora` and :func:`load`).

    Cached latents and text embeddings (the VAE and text encoder only sit in memory), the forward pass under
    autocast, the loss scaled and the gradients unscaled in place (what a ``GradScaler`` does), gradient clipping,
    AdamW.

    Args:
        parts (`dict`): loaded.
        batch (`int`, defaults to 2): images per step.
        size (`int`, defaults to 512): image side (latents 8 times smaller).
        steps (`int`): optimiser steps.

    Returns:
        `torch.optim.Optimizer`: the optimiser (its state stays in memory while it is referenced).
    """
    unet = parts["unet"]
    params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    for _ in range(steps):
        latents = torch.randn(batch, 4, size // 8, size // 8)
        text = torch.randn(batch, 77, unet.config.cross_attention_dim)
        noise = torch.randn_like(latents)
        with torch.autocast("cpu", dtype=torch.float16):
            pred = unet(latents + noise, torch.randint(0, 1000, (batch,)), text).sample
        loss = F.mse_loss(pred.float(), noise)
        (loss * 1024).backward()
        torch._foreach_mul_([p.grad for p in params], 1 / 1024)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        del latents, text, noise, pred, loss
    return optimizer


def train_embedding(
    parts: dict,
    images: int = 8,
    batch: int = 1,
    size: int = SIZE,
    gradient_checkpointing: bool = True,
    steps: int = WORK_STEPS,
) -> None:
    """What training one new word's embedding allocates (``text_embeddings.train_textual_inversion``).

    Everything is frozen but one row of the token table (float32): the gradient flows back through the UNet and
    the text encoder to it, so their activations are kept (or, with gradient checkpointing, the UNet's recomputed).
    The images are encoded once and kept as latents.

    Args:
        parts (`dict`): loaded.
        images (`int`, defaults to 8): pictures of the concept.
        batch (`int`, defaults to 1): pictures per forward and backward pass (gradients add up over the rest).
        size (`int`): image side.
        gradient_checkpointing (`bool`): in the UNet.
        steps (`int`): optimiser steps.
    """
    from .text_embeddings import encode_embeddings

    te, unet, vae = parts["text_encoder"], parts["unet"], parts["vae"]
    if gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        unet.train()
    with torch.no_grad():
        latents = torch.cat(
            [vae.encode(torch.zeros(1, 3, size, size, dtype=vae.dtype)).latent_dist.mean for _ in range(images)]
        )
    row = torch.zeros(te.config.hidden_size, requires_grad=True)
    optimizer = torch.optim.Adam([row], lr=5e-3)
    table = te.get_input_embeddings()
    for _ in range(steps):
        for start in range(0, images, batch):
            n = min(batch, images - start)
            with torch.autocast("cpu", dtype=torch.float16):
                text = encode_embeddings(te, table(torch.zeros(n, 77, dtype=torch.long)) + row)
                x = latents[start : start + n]
                pred = unet(x + torch.randn_like(x), torch.randint(0, 1000, (n,)), text).sample
            loss = F.mse_loss(pred.float(), torch.zeros(pred.shape))
            (loss * 1024).backward()
            del text, x, pred, loss
        row.grad.mul_(1 / 1024)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


# --- 4. estimates ------------------------------------------------------------------------------------------
@dataclass
class Estimate:
    """One estimate: ``peak_gib`` (the whole peak), ``weights_gib`` (what was resident before the work started)
    and ``seconds`` (how long the estimate took on this machine)."""

    peak_gib: float
    weights_gib: float
    seconds: float


def estimate(parts: dict, work: Callable[[dict], None], prepare: Callable[[dict], None] | None = None) -> Estimate:
    """Load ``parts`` on the fake GPU, run ``work`` on them and return the peak.

    Args:
        parts (`dict`): every model the cell holds on the GPU, on ``meta`` (:func:`pipeline_parts`; a second
            pipeline's models under other names).
        work (`Callable[[dict], None]`): the cell's heaviest work, e.g. ``lambda m: generate(m, images=4)``.
        prepare (`Callable[[dict], None]`, *optional*): what happens before loading, e.g. :func:`add_lora`.
    """
    start = time.perf_counter()
    if prepare is not None:
        prepare(parts)
    with fake_gpu() as counter:
        load(parts)
        weights = counter.live
        work(parts)
        peak = counter.peak
    return Estimate(round(peak / GIB, 2), round(weights / GIB, 2), round(time.perf_counter() - start, 1))


# --- 5. checked against a GPU, and every lesson's heaviest cell ---------------------------------------------------
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
    """:data:`CHECKS` estimated here: ``what``, ``measured_gib`` (H100), ``estimate_gib`` and ``error`` (a share)."""
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


@dataclass
class Cell:
    """A lesson's heaviest cell on `sd15`, as its code runs on a GPU in float16 at 512x512 (the profile's default).

    Attributes:
        lesson (`str`): ``"01"`` .. ``"10"``.
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


def _without_checker(parts: dict) -> dict:
    return {k: v for k, v in parts.items() if k != "safety_checker"}


@torch.no_grad()
def decode(parts: dict, latents: int, size: int = SIZE) -> None:
    """``latents`` latents decoded as ``cu.decode_latents`` does: ``visual.DECODE_BATCH`` per VAE call, each batch's
    images moved off the GPU before the next."""
    from .visual import DECODE_BATCH

    vae = parts["vae"]
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    for k in range(0, latents, DECODE_BATCH):
        n = min(DECODE_BATCH, latents - k)
        vae.decode(torch.zeros(n, 4, size // factor, size // factor, dtype=vae.dtype))


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


LESSONS = (
    Cell(
        "01",
        "§2, the three lines",
        "two SD 1.5 pipelines (the course's and `three`), each with its safety checker; one image",
        lambda: dict(pipe=_pipe(), three=_pipe()),
        lambda m: generate(m["three"]),
    ),
    Cell(
        "02",
        "§9.4, the new word in a prompt",
        "the pipeline, a second copy of its models loaded one by one (`assembled`, no checker), 4 images in one call",
        lambda: dict(pipe=_pipe(), assembled=_pipe(checker=False)),
        lambda m: generate(m["assembled"], images=4),
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
        "§5, when a negative prompt acts",
        "the pipeline; 6 latents decoded, 4 per VAE call",
        lambda: dict(pipe=_pipe()),
        lambda m: decode(m["pipe"], 6),
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
        "§4, blending with a plain model",
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
)


def lesson_table(lessons=LESSONS) -> list[dict]:
    """Every lesson's heaviest cell, estimated: ``lesson``, ``where``, ``what``, ``peak_gib``, ``weights_gib``,
    ``fits_t4`` (below :data:`T4_LIMIT_GIB`) and ``fits_8gb`` (below :data:`EIGHT_GB_LIMIT_GIB`)."""
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
    """:func:`lesson_table` and :func:`check_rows` as the Markdown tables of ``docs/instructors.md``."""
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
    """``python -m course_utils gpu-memory [--json PATH]``: print the estimates (and the checks), optionally as JSON."""
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
