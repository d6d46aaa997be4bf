"""Image to image by hand: what ``StableDiffusionImg2ImgPipeline`` does before its denoising loop (lesson 04).

Lesson 04, §4 writes the mechanism out in four moves, one cell each, and checks each against the function
below; §5 shows why PNDM's warm-up does not fit the cut schedule (:func:`start_timesteps`); §6 the input checks.

Text-to-image starts from pure noise x_T. Image-to-image starts from *your image*, moved part of
the way towards noise (diffusers 0.42, ``StableDiffusionImg2ImgPipeline.__call__``)::

    ts  = start_timesteps(scheduler, num_inference_steps, strength)   # 5. the tail of the timesteps
    z_0 = encode_image(vae, image, generator)                          # 6. VAE-encode  [1, 4, H/f, W/f]
    z_t = noise_latents(scheduler, z_0, ts[0], generator)              #    noise up to the first of them
    z   = by_hand.denoise(unet, scheduler, z_t, c, c_uncond, w, timesteps=ts)   # 8. the usual loop

``strength`` picks how far: near 0 keeps the image, 1 starts from (almost) pure noise and
ignores most of the image. Noise is added to the image's *latents*; the text embedding is never noised.
With the same generator seed the result equals the pipeline's (the VAE draws its sample first, then the
noise is drawn - the same order as the pipeline's ``prepare_latents``).
"""

import numbers

import torch
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils.torch_utils import randn_tensor

from . import by_hand
from .errors import CourseError
from .images import load_image, round_size

__all__ = ["check_strength", "start_timesteps", "load_init_image", "encode_image", "noise_latents", "img2img_by_hand"]


def check_strength(strength: float) -> float:
    """Raise a clear error unless ``0 <= strength <= 1`` (lesson 04, §6).

    Args:
        strength (`float`): how much of the image img2img may change.

    Returns:
        `float`: ``strength`` unchanged.

    Raises:
        CourseError: ``strength`` is outside [0, 1]; the message says what it means.
    """
    is_number = isinstance(strength, numbers.Real) and not isinstance(strength, bool)
    if not (is_number and 0.0 <= strength <= 1.0):  # NaN fails the comparison too
        raise CourseError(
            f"strength={strength!r} is not a number in [0, 1]. strength is the fraction of the denoising steps img2img "
            "runs, i.e. how much noise is added to your image first: 0 keeps the image as it is, 1 replaces it "
            "almost entirely (like text-to-image), 0.5-0.8 keeps the layout and redraws the details. "
            "Pick a value between 0 and 1."
        )
    return strength


def start_timesteps(scheduler, num_inference_steps: int, strength: float, device=None) -> torch.Tensor:
    """The timesteps img2img denoises: the tail of ``scheduler.timesteps`` that ``strength`` picks.

    Lesson 04, §4 writes this out (move 1, "pick the start") and checks it against this function.

    Reproduces the pipeline's ``retrieve_timesteps`` + ``get_timesteps``:
    ``init = min(int(num_inference_steps * strength), num_inference_steps)``,
    ``t_start = num_inference_steps - init``, tail = ``scheduler.timesteps[t_start * scheduler.order:]``.
    The tail can hold more entries than ``init``: PNDM (SD 1.5's default) takes its first step twice, so
    its 10-step schedule has 11 timesteps, ``[901, 801, 801, 701, ...]``, and strength 0.6 runs 7 UNet calls.
    One UNet call (with a batch of 2 under guidance) per entry.

    PNDM and a cut schedule (lesson 04, §5): PNDM has no ``set_begin_index``; its step counter restarts at 0,
    so its two-call warm-up (a first-order step t -> t - Δ, then the same step redone with the average of
    both noise predictions) runs on the tail's first two entries, although the repeated timestep that made
    room for it was cut off. From the third call on the scheduler steps from the timestep it is told while
    the latents are still one step noisier (one interval is never stepped), and noise is left at the end.
    Schedulers without the warm-up call (DDIM, DPM-Solver++) follow the tail exactly.

    Calls ``scheduler.set_timesteps`` (which also resets a multistep scheduler's history) and, for
    schedulers that have it, ``set_begin_index`` - exactly as the pipeline does.

    Args:
        scheduler (`SchedulerMixin`): the pipeline's scheduler.
        num_inference_steps (`int`): the steps a full (strength 1) run would take.
        strength (`float`): in [0, 1], see `check_strength`.
        device (`str` or `torch.device`, *optional*): where the timesteps live.

    Returns:
        `torch.Tensor`: the timesteps to run, shape ``[n]``; ``tail[0]`` is the noise level the image is
        noised to. For PNDM ``n = int(num_inference_steps * strength) + 1``; for single-step schedulers
        such as DDIM or Euler ``n = int(num_inference_steps * strength)`` (possibly 0).
    """
    check_strength(strength)
    scheduler.set_timesteps(num_inference_steps, device=device)
    init = min(int(num_inference_steps * strength), num_inference_steps)
    t_start = max(num_inference_steps - init, 0)
    begin = t_start * scheduler.order
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(begin)
    return scheduler.timesteps[begin:]


def noise_levels(scheduler, tail: torch.Tensor, z0: torch.Tensor, noise: torch.Tensor):
    """Step ``scheduler`` along ``tail`` with the exact added noise as the model output: the noise level told vs held.

    Lesson 04, §5 writes this probe out to show what PNDM's warm-up does to a cut schedule. A perfect UNet
    would predict exactly ``noise``; every latent is then ``a·z0 + b·noise`` and ``b / a`` is its noise level σ,
    to compare with the σ of the timestep the UNet is told, ``sqrt((1 - ᾱ_t) / ᾱ_t)``.

    Args:
        scheduler (`SchedulerMixin`): set up for ``tail`` (e.g. by :func:`start_timesteps`); it is stepped.
        tail (`torch.Tensor`): the timesteps to step along, ``[n]``.
        z0 (`torch.Tensor`): the clean latents, ``[1, 4, h, w]``.
        noise (`torch.Tensor`): the noise added at ``tail[0]``, same shape.

    Returns:
        `tuple`: ``told`` (`list[float]`, σ of each timestep), ``held`` (`list[float]`, σ of the latents each
        call receives) and ``(a, sigma)`` of the latents after the last call.
    """
    basis = torch.stack([z0.flatten(), noise.flatten()], dim=1).float().cpu()

    def a_and_sigma(x):  # x = a·z0 + b·ε exactly; its noise level is b / a
        a, b = torch.linalg.lstsq(basis, x.flatten().float().cpu()[:, None]).solution.flatten().tolist()
        return a, b / a

    latents, told, held = scheduler.add_noise(z0, noise, tail[:1]), [], []
    for t in tail:
        ab = scheduler.alphas_cumprod[int(t)]
        told.append(((1 - ab) / ab).sqrt().item())
        held.append(a_and_sigma(latents)[1])
        latents = scheduler.step(noise, t, latents).prev_sample
    return told, held, a_and_sigma(latents)


def load_init_image(image, size=None):
    """The input image as RGB with sides that are multiples of 8 (via `cu.load_image`; lesson 04, §6).

    Args:
        image (`str`, `Path` or `PIL.Image.Image`): a path, a name in ``data/`` or an opened image, any mode
            (RGBA, grayscale, palette, CMYK are converted with a note).
        size (`int` or `tuple[int, int]`, *optional*): resize to this ``(width, height)``.

    Returns:
        `PIL.Image.Image`: RGB; a size that is not a multiple of 8 is rounded down, with a note.
    """
    image = load_image(image, size=size)
    if round_size(image.size) != image.size:
        image = load_image(image, size=image.size)  # prints the rounding note
    return image


@torch.no_grad()
def encode_image(vae, image, generator: torch.Generator | None = None) -> torch.Tensor:
    """VAE-encode an image to *scaled* latents, exactly as the img2img pipeline's ``prepare_latents``.

    Lesson 04, §4 writes this out (move 2, the first random draw) and checks it against this function.

    1. ``VaeImageProcessor.preprocess``: PIL ``[H, W, 3]`` in 0..255 -> tensor ``[1, 3, H, W]`` in [-1, 1];
    2. ``vae.encode`` gives a Gaussian per latent cell; draw a sample from it with ``generator``
       (diffusers' ``retrieve_latents``) - this is the first random draw of an img2img run;
    3. multiply by ``vae.config.scaling_factor`` (0.18215 for SD 1.5).

    Args:
        vae (`AutoencoderKL`): the pipeline's VAE.
        image (`str`, `Path` or `PIL.Image.Image`): goes through `load_init_image` (RGB, multiples of 8).
        generator (`torch.Generator`, *optional*): the generator you would pass to the pipeline.

    Returns:
        `torch.Tensor`: latents z_0 of shape ``[1, 4, H/f, W/f]`` on the VAE's device and dtype.
    """
    image = load_init_image(image)
    processor = VaeImageProcessor(vae_scale_factor=2 ** (len(vae.config.block_out_channels) - 1))
    pixels = processor.preprocess(image)  # [1, 3, H, W] in [-1, 1]
    return by_hand.encode(vae, pixels, generator)  # steps 2-3


def noise_latents(scheduler, latents: torch.Tensor, t, generator: torch.Generator | None = None) -> torch.Tensor:
    """Noise clean latents up to timestep ``t`` (the forward process), as the pipeline does.

    Lesson 04, §4 writes this out (move 3, the second random draw) and checks it against this function.

    ``z_t = sqrt(alpha_bar_t) * z_0 + sqrt(1 - alpha_bar_t) * noise`` via ``scheduler.add_noise``, with
    ``noise`` drawn by diffusers' ``randn_tensor`` from ``generator`` (the draw after `encode_image`'s).

    Args:
        scheduler (`SchedulerMixin`): the pipeline's scheduler (after ``set_timesteps``).
        latents (`torch.Tensor`): z_0, ``[batch, 4, h, w]``.
        t (`int` or `torch.Tensor`): the timestep to noise to, usually ``start_timesteps(...)[0]``.
        generator (`torch.Generator`, *optional*): the same generator that `encode_image` used.

    Returns:
        `torch.Tensor`: z_t, same shape as ``latents``.
    """
    noise = randn_tensor(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
    t = torch.as_tensor(t, device=latents.device).reshape(1).repeat(latents.shape[0])
    return scheduler.add_noise(latents, noise, t)


@torch.no_grad()
def img2img_by_hand(
    pipe,
    image,
    prompt: str,
    strength: float = 0.8,
    num_inference_steps: int = 50,
    guidance_scale: float = 7.5,
    generator: torch.Generator | None = None,
    negative_prompt: str = "",
) -> torch.Tensor:
    """The whole img2img mechanism with the pipeline's parts; returns latents, like ``output_type="latent"``.

    Lesson 04, §4's four moves in one call (with ``by_hand.denoise`` as move 4); the tests compare it with the pipeline.

    Args:
        pipe (`StableDiffusionImg2ImgPipeline` or `StableDiffusionPipeline`): supplies the five components.
        image (`str`, `Path` or `PIL.Image.Image`): the starting image.
        prompt (`str`): the text.
        strength (`float`, defaults to 0.8): in [0, 1].
        num_inference_steps (`int`, defaults to 50): steps of a full run; about ``strength`` of them run.
        guidance_scale (`float`, defaults to 7.5): classifier-free guidance weight w.
        generator (`torch.Generator`, *optional*): seed it as for the pipeline to get the pipeline's result.
        negative_prompt (`str`, defaults to ``""``): replaces the empty prompt of the unconditional branch.

    Returns:
        `torch.Tensor`: denoised latents ``[1, 4, H/f, W/f]`` (decode with ``by_hand.decode``).
    """

    check_strength(strength)
    cond = by_hand.encode_text(pipe.tokenizer, pipe.text_encoder, prompt)
    uncond = by_hand.encode_text(pipe.tokenizer, pipe.text_encoder, negative_prompt)
    timesteps = start_timesteps(pipe.scheduler, num_inference_steps, strength, device=pipe.device)
    if len(timesteps) == 0:
        raise CourseError(
            f"strength={strength} with {num_inference_steps} steps runs no step at all "
            f"(int({num_inference_steps} * {strength}) == 0); raise strength or num_inference_steps."
        )
    z0 = encode_image(pipe.vae, image, generator).to(cond.dtype)
    zt = noise_latents(pipe.scheduler, z0, timesteps[0], generator)
    return by_hand.denoise(
        pipe.unet, pipe.scheduler, zt, cond, uncond, guidance_scale, timesteps=timesteps, generator=generator
    )
