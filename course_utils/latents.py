"""The latent cache: a training set's images VAE-encoded once, and a fresh draw of ``x_0`` from it at every step.

The VAE is frozen while the UNet trains, so it gives an image the same Gaussian every time: encode the images
once (:func:`encode`: the posterior's ``mean`` and ``std``, ``[N, 4, h, w]``), keep the two tensors, and at each
step draw the batch's clean latents from them (:func:`draw`)::

    x_0 = (mean[index] + std[index] * eps) * scaling_factor,    eps = randn([B, 4, h, w])

which is what ``vae.encode(pixels).latent_dist.sample(generator) * scaling_factor`` gives, without running the
encoder (at `tiny`'s size the encoder costs more than a UNet step; at SD 1.5's it is a second big network).

Lesson 10 uses it through ``new_concept.encode_dataset`` and ``new_concept.sample_latents``; ``training/`` for
the text-to-image and style stages' caches (``cache_scenes``). A basic module: it imports torch and no course
module, so both the lesson modules and ``training/`` may import it.
"""

import torch

__all__ = ["encode", "draw"]


@torch.no_grad()
def encode(vae, pixels: torch.Tensor) -> dict:
    """The VAE's distribution for a batch of images: its ``mean`` and ``std``, unscaled.

    Args:
        vae (`AutoencoderKL`): the (frozen) VAE.
        pixels (`torch.Tensor`): ``[B, 3, H, W]`` in [-1, 1]; moved to the VAE's device and dtype first.

    Returns:
        `dict`: ``mean`` and ``std``, ``[B, 4, H/f, W/f]`` each (f = the VAE's downsampling: 8 for SD 1.5, 4 for
        `tiny`), on the CPU in float32 whatever the VAE's dtype (a cache of a few hundred images stays small,
        and :func:`draw` draws on the CPU). A caller that encodes in chunks concatenates the chunks' tensors.
    """
    dist = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist
    return dict(mean=dist.mean.float().cpu(), std=dist.std.float().cpu())


def draw(
    cache: dict,
    index: torch.Tensor,
    scaling_factor: float,
    generator: torch.Generator,
    styled: torch.Tensor | None = None,
) -> torch.Tensor:
    """Clean latents ``x_0`` for the images ``index``: one draw from each one's Gaussian, times ``scaling_factor``.

    It draws exactly one tensor from ``generator``, ``randn([B, 4, h, w])``, and nothing else. Which images (and,
    for training's style stages, which of their two encodings) are the caller's draws, made *before* this one
    from the same generator, and they stay the caller's on purpose: ``training/`` draws ``randint`` over the
    whole cache (then, in the style stages, ``rand`` for the outlined share), lesson 10 draws half new-concept
    and half prior images (``draw_batch``). Each order is what its runs were made with: the committed training
    runs (``training/runs_that_made_data_tiny/``) and lesson 10's recipe replay bit for bit only if every random
    number comes in the same place, so this function takes the index instead of drawing it in one of the two
    ways.

    Args:
        cache (`dict`): ``mean`` and ``std``, ``[N, 4, h, w]`` on the CPU (:func:`encode`, concatenated); with
            ``styled``, also ``styled_mean`` and ``styled_std``, a second encoding of the same ``N`` images.
        index (`torch.LongTensor`): ``[B]`` image numbers (repeats allowed).
        scaling_factor (`float`): ``vae.config.scaling_factor``.
        generator (`torch.Generator`): a CPU generator.
        styled (`torch.BoolTensor`, *optional*): ``[B]``; where `True`, that image's second encoding.

    Returns:
        `torch.Tensor`: ``[B, 4, h, w]`` on the CPU, in the cache's dtype (float32).
    """
    mean, std = cache["mean"][index], cache["std"][index]
    if styled is not None:
        pick = styled[:, None, None, None]
        mean = torch.where(pick, cache["styled_mean"][index], mean)
        std = torch.where(pick, cache["styled_std"][index], std)
    return (mean + std * torch.randn(mean.shape, generator=generator)) * scaling_factor
