"""Stable Diffusion by hand: the pipeline's steps as plain functions (the reference the lessons match).

Lesson 03 derives these: §3 the text embeddings, §4 the starting noise x_T, §5 the loop, §7 the check
against the pipeline; lesson 02, §6 encodes and decodes with the VAE by hand.

``StableDiffusionPipeline.__call__`` does, in order (diffusers 0.42, same numbering as its source)::

    c        = encode_text(tokenizer, text_encoder, prompt)            # 3. text embedding  [B, 77, hidden]
    c_uncond = encode_text(tokenizer, text_encoder, [""] * B)          #    the empty prompt, for guidance
    scheduler.set_timesteps(num_inference_steps, device=device)       # 4. the timesteps t
    x_T      = initial_latents(B, unet, scheduler, H, W, generator, device, dtype)  # 5. pure noise
    x_0      = denoise(unet, scheduler, x_T, c, c_uncond, w, generator=generator)   # 7. the loop
    images   = decode(vae, x_0)                                        #    back to pixels in [-1, 1]

With the same ``generator`` seed these give the pipeline's latents (max abs difference ~1e-6 on CPU fp32;
``tests/test_equivalence_loop.py`` checks it). Noise is only ever added to / removed from the *latents*;
the text embedding ``c`` is never noised, it only conditions the UNet.

Other lessons reuse the pieces: img2img passes a tail of ``scheduler.timesteps`` to `denoise`, negative
prompts pass their embedding as ``uncond``, inpainting passes the mask and masked-image latents as
``extra_channels``.
"""

import inspect
from typing import Callable

import torch
from diffusers.utils.torch_utils import randn_tensor

__all__ = ["encode_text", "initial_latents", "denoise", "encode", "decode", "to_pil", "guidance_enabled", "tolerance"]


@torch.no_grad()
def encode_text(tokenizer, text_encoder, prompt: str | list[str]) -> torch.Tensor:
    """Turn a prompt into the text embedding ``c`` that conditions the UNet (as ``pipe.encode_prompt`` does).

    Lesson 03, §3 writes this out (lesson 02, §5 runs the text encoder alone); used again in lessons 04, 05, 08.

    1. tokenize: pad (with CLIP's end token) or cut to ``tokenizer.model_max_length`` = 77 tokens;
    2. run CLIP's text transformer; its last hidden state is the embedding.

    Args:
        tokenizer (`CLIPTokenizer`): the pipeline's tokenizer.
        text_encoder (`CLIPTextModel`): the pipeline's text encoder.
        prompt (`str` or `list[str]`): one prompt or a batch; ``""`` gives the unconditional embedding.

    Returns:
        `torch.Tensor`: shape ``[batch, 77, hidden]`` (hidden = 768 for SD 1.5, 64 for `tiny`), on the text
        encoder's device and in its dtype.
    """
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    tokens = tokenizer(
        prompts,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    )
    attention_mask = None
    if getattr(text_encoder.config, "use_attention_mask", False):  # not for SD 1.5's CLIP; as the pipeline does
        attention_mask = tokens.attention_mask.to(text_encoder.device)
    embeddings = text_encoder(tokens.input_ids.to(text_encoder.device), attention_mask=attention_mask)[0]
    return embeddings.to(text_encoder.dtype)


def initial_latents(
    batch: int,
    unet,
    scheduler,
    height: int,
    width: int,
    generator: torch.Generator | list[torch.Generator] | None,
    device: str | torch.device,
    dtype: torch.dtype,
    channels: int | None = None,
    vae_scale_factor: int = 8,
) -> torch.Tensor:
    """The starting point x_T: Gaussian noise, scaled as the scheduler expects (the pipeline's ``prepare_latents``).

    Lesson 03, §4 draws x_T by hand; §8 uses this for other schedulers; used again in lessons 05, 08.

    1. draw ``randn`` with diffusers' ``randn_tensor`` (a CPU generator draws on the CPU, then moves to ``device``,
       so a seed gives the same noise on every device);
    2. multiply by ``scheduler.init_noise_sigma`` (1.0 for PNDM/DDIM/DPM-Solver, about 14.6 for Euler).

    Args:
        batch (`int`): number of images.
        unet (`UNet2DConditionModel`): used for the number of latent channels.
        scheduler (`SchedulerMixin`): used for ``init_noise_sigma``; call ``set_timesteps`` first (Euler's sigma
            depends on it).
        height (`int`), width (`int`): image size in pixels (multiples of 8).
        generator (`torch.Generator`, *optional*): pass the same generator (same seed) as to the pipeline.
        device (`str` or `torch.device`): where the latents live.
        dtype (`torch.dtype`): the latents' dtype (the pipeline uses the text embedding's dtype).
        channels (`int`, *optional*): latent channels; defaults to ``unet.config.out_channels`` (4 for SD 1.5),
            which is also right for UNets that take extra input channels (inpainting: 9 in, 4 out).
        vae_scale_factor (`int`, defaults to 8): pixels per latent cell (SD 1.5: 8; `tiny`: 4); pass the pipeline's
            ``pipe.vae_scale_factor``, which is ``2 ** (len(vae.config.block_out_channels) - 1)``.

    Returns:
        `torch.Tensor`: x_T of shape ``[batch, channels, height // vae_scale_factor, width // vae_scale_factor]``.
    """
    channels = channels or unet.config.out_channels
    shape = (batch, channels, int(height) // vae_scale_factor, int(width) // vae_scale_factor)
    x_T = randn_tensor(shape, generator=generator, device=torch.device(device), dtype=dtype)
    return x_T * scheduler.init_noise_sigma


def guidance_enabled(unet, guidance_scale: float) -> bool:
    """Whether classifier-free guidance runs (as the pipeline decides): ``w > 1`` and no guidance-embedding UNet.

    The condition behind lesson 03, §5's guidance step (lesson 05, §1 explains guidance); `denoise` asks it.

    Args:
        unet (`UNet2DConditionModel`): its ``config.time_cond_proj_dim`` is set for guidance-embedding UNets.
        guidance_scale (`float`): w.

    Returns:
        `bool`: `True` when the UNet runs on the unconditional and the text batch.
    """
    return guidance_scale > 1 and getattr(unet.config, "time_cond_proj_dim", None) is None


def _step_kwargs(scheduler, generator, eta: float) -> dict:
    """The pipeline's ``prepare_extra_step_kwargs``: ``eta`` (DDIM) and ``generator`` (stochastic schedulers)."""
    accepted = set(inspect.signature(scheduler.step).parameters)
    kwargs = {}
    if "eta" in accepted:
        kwargs["eta"] = eta
    if "generator" in accepted:
        kwargs["generator"] = generator
    return kwargs


@torch.no_grad()
def denoise(
    unet,
    scheduler,
    latents: torch.Tensor,
    cond: torch.Tensor,
    uncond: torch.Tensor | None,
    guidance_scale: float,
    timesteps: torch.Tensor | None = None,
    extra_channels: torch.Tensor | None = None,
    on_step: Callable | None = None,
    generator: torch.Generator | list[torch.Generator] | None = None,
    eta: float = 0.0,
) -> torch.Tensor:
    """The denoising loop: from x_t down to x_0, one ``scheduler.step`` per timestep (the pipeline's step 7).

    Lesson 03, §5 writes this loop out (§7 checks it against the pipeline, §8 swaps the scheduler); this is the
    reference the equality checks use. Lesson 05 (§3) calls it with a negative prompt as ``uncond``; lessons 04
    (§4, a tail of the timesteps) and 08 (§4, ``extra_channels``) write their variant out in the cell, and
    their tests check it against this function.

    For each timestep t:

    1. x_in = [x_t, x_t] (one copy for the unconditional, one for the text prediction) when guiding, else x_t;
    2. x_in = ``scheduler.scale_model_input(x_in, t)`` (divides by sqrt(sigma^2 + 1) for Euler; identity for PNDM);
    3. inpainting only: append ``extra_channels`` (mask + masked-image latents) on the channel dim, *after* scaling;
    4. ε = ε_θ(x_in, t, [c_uncond, c]): the UNet predicts the noise in x_t;
    5. guidance: ε = ε_uncond + w · (ε_text − ε_uncond);
    6. x_{t-1} = ``scheduler.step(ε, t, x_t)``;
    7. ``on_step(i, t, x_{t-1})`` if given; if it returns a tensor, that tensor replaces x_{t-1}.

    Args:
        unet (`UNet2DConditionModel`): ε_θ.
        scheduler (`SchedulerMixin`): ``scheduler.set_timesteps(n, device=...)`` must already have been called.
        latents (`torch.Tensor`): x_t to start from, ``[batch, 4, h, w]`` (x_T from `initial_latents`, or a noised
            image for img2img).
        cond (`torch.Tensor`): text embedding c, ``[batch, 77, hidden]``.
        uncond (`torch.Tensor`, *optional*): unconditional (empty or negative prompt) embedding, same shape;
            not needed (may be ``None``) when there is no guidance.
        guidance_scale (`float`): w; guidance runs only when ``w > 1`` (as in diffusers), then the UNet sees a
            batch of ``2 * batch``.
        timesteps (`torch.Tensor`, *optional*): defaults to ``scheduler.timesteps``; img2img passes a tail of them
            (the scheduler's begin index is then set, as the img2img pipeline does, unless already set).
        extra_channels (`torch.Tensor`, *optional*): ``[batch, 5, h, w]`` mask + masked-image latents for the
            9-channel inpainting UNet; duplicated for guidance.
        on_step (`Callable`, *optional*): ``on_step(i, t, latents)`` after each step.
        generator (`torch.Generator`, *optional*): passed to ``scheduler.step`` for schedulers that draw noise
            (DDPM, Euler ancestral, ...); give the generator that drew x_T, as the pipeline does.
        eta (`float`, defaults to 0.0): DDIM's η, for schedulers that take it.

    Returns:
        `torch.Tensor`: the denoised latents x_0, ``[batch, 4, h, w]`` (decode them with `decode`).
    """
    guided = guidance_enabled(unet, guidance_scale)
    if guided and uncond is None:
        raise ValueError(f"guidance_scale={guidance_scale} > 1 needs an unconditional embedding: pass uncond")
    if timesteps is None:
        timesteps = scheduler.timesteps
    elif hasattr(scheduler, "set_begin_index") and getattr(scheduler, "begin_index", 0) is None:
        scheduler.set_begin_index(len(scheduler.timesteps) - len(timesteps))
    # The unconditional batch first, then the text batch: the pipeline's torch.cat([negative, prompt]).
    c = torch.cat([uncond, cond]) if guided else cond
    if extra_channels is not None and guided:
        extra_channels = torch.cat([extra_channels] * 2)
    step_kwargs = _step_kwargs(scheduler, generator, eta)

    for i, t in enumerate(timesteps):
        # 1.-2. the model input x_t (twice for guidance), scaled for this scheduler
        x_in = torch.cat([latents] * 2) if guided else latents
        x_in = scheduler.scale_model_input(x_in, t)
        # 3. inpainting: mask + masked-image latents as extra input channels
        if extra_channels is not None:
            x_in = torch.cat([x_in, extra_channels], dim=1)
        # 4. ε_θ(x_t, t, c)
        eps = unet(x_in, t, encoder_hidden_states=c).sample
        # 5. classifier-free guidance
        if guided:
            eps_uncond, eps_text = eps.chunk(2)
            eps = eps_uncond + guidance_scale * (eps_text - eps_uncond)
        # 6. x_t -> x_{t-1}
        latents = scheduler.step(eps, t, latents, **step_kwargs).prev_sample
        # 7. let the caller look (or replace the latents)
        if on_step is not None:
            replaced = on_step(i, t, latents)
            if isinstance(replaced, torch.Tensor):
                latents = replaced
    return latents


@torch.no_grad()
def encode(vae, pixels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Pixels to scaled latents with the VAE encoder, as img2img and inpainting pipelines do.

    Lesson 02, §6 encodes a photo by hand; ``img2img.encode_image`` (lesson 04, §4) and ``inpaint.encode_image``
    (lesson 08, §3) call this.

    1. ``vae.encode`` gives a Gaussian per latent cell; draw a *sample* from it with ``generator``
       (diffusers' ``retrieve_latents(..., sample_mode="sample")``);
    2. multiply by ``vae.config.scaling_factor`` (0.18215 for SD 1.5).

    Args:
        vae (`AutoencoderKL`): the pipeline's VAE.
        pixels (`torch.Tensor`): ``[batch, 3, H, W]`` with values in [-1, 1].
        generator (`torch.Generator`, *optional*): the generator given to the pipeline.

    Returns:
        `torch.Tensor`: latents ``[batch, 4, H/f, W/f]`` (f = ``pipe.vae_scale_factor``: 8 for SD 1.5, 4 for `tiny`) on the VAE's device and dtype, in the memory layout
        the VAE returns (on the CPU it may be channels-last, as in the img2img pipeline; the UNet's
        convolutions round differently on the two layouts, so a by-hand copy must keep the pipeline's).
    """
    pixels = pixels.to(device=vae.device, dtype=vae.dtype)
    return vae.encode(pixels).latent_dist.sample(generator) * vae.config.scaling_factor


@torch.no_grad()
def decode(vae, latents: torch.Tensor) -> torch.Tensor:
    """Latents back to pixels with the VAE decoder (undoing the scaling factor first).

    Lesson 02, §6 decodes by hand, as lesson 03, §7 does for the loop's result; used again in lesson 08 (§4, §6)
    and by ``visual.decode_latents``.

    Args:
        vae (`AutoencoderKL`): the pipeline's VAE.
        latents (`torch.Tensor`): ``[batch, 4, h, w]``, scaled latents as the UNet sees them.

    Returns:
        `torch.Tensor`: images ``[batch, 3, f*h, f*w]`` (f = 8 for SD 1.5, 4 for `tiny`) with values in about [-1, 1] (not clamped; see `to_pil`).
    """
    latents = latents.to(vae.device, vae.dtype)
    return vae.decode(latents / vae.config.scaling_factor).sample


def to_pil(images: torch.Tensor) -> list:
    """Images in [-1, 1] (from `decode`) to PIL images, as the pipeline's ``image_processor.postprocess`` does.

    Lesson 02, §6 writes its own ``to_pil``; this one is used in lesson 08 (§4, §6) and by ``visual.decode_latents``.

    Args:
        images (`torch.Tensor`): ``[batch, 3, H, W]``.

    Returns:
        `list[PIL.Image.Image]`: ``batch`` RGB images.
    """
    from diffusers.image_processor import VaeImageProcessor

    return VaeImageProcessor().postprocess(images.detach(), output_type="pil")


def tolerance(dtype: torch.dtype, reference: torch.Tensor | None = None) -> float:
    """How close "the same" is when a by-hand result is checked against the pipeline's.

    Lesson 02 (§5, §8) first compares with it, lesson 03, §7 explains it for the loop; every later lesson's
    by-hand check uses it (lessons 04 §4, 05 §3, 06 §4, 07, 08 §3-4).

    In float32 on one machine the two usually agree exactly; ``1e-4`` leaves room for other
    maths libraries. float16 keeps about three significant digits, and on a GPU two runs of the
    *same* pipeline can differ in the last digits, and 25 steps carry such differences along
    (measured with lesson 8's blending pipeline, same seed: on an H100 two runs 0.0078 apart on
    latents near 10, one last-digit step; on an H200 the first run 0.030 from the next ones on
    latents up to 2.9, about 15 steps). So in half precision we allow 32 last-digit steps at the
    reference's largest value (about 3% of it, and 0.031 for values up to 1); a by-hand loop that
    gets something wrong is off by far more.

    Args:
        dtype (`torch.dtype`): the dtype the pipeline ran in.
        reference (`torch.Tensor`, *optional*): the pipeline's result (e.g. latents ``[1, 4, h, w]``);
            its largest absolute value sets the scale in half precision.

    Returns:
        `float`: the largest max-abs difference that still counts as a match.
    """
    if dtype == torch.float32 or dtype == torch.float64:
        return 1e-4
    scale = 1.0 if reference is None else max(1.0, reference.detach().abs().max().item())
    return 32 * torch.finfo(dtype).eps * scale
