"""Weight surgery shared by the builders and ``training/``: a model made from another one's weights.

* :func:`inpaint_unet_from` - the inpainting UNet (9 input channels) from a text-to-image UNet (4),
  as SD's inpainting model was initialised (lesson 08);
* :func:`upscaler_vae` - a VAE rescaled to the scaling factor the x4 upscale pipeline insists on
  (lesson 06).
"""

import math

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from ..device import cast
from .configs import INPAINT_EXTRA_CHANNELS, X4_UPSCALER_VAE


def inpaint_unet_from(unet: UNet2DConditionModel, extra_channels: int = INPAINT_EXTRA_CHANNELS) -> UNet2DConditionModel:
    """A copy of a text-to-image UNet with ``extra_channels`` more input channels, set to zero.

    This is how SD's inpainting model was initialised before its training: all weights come
    from the text-to-image model, and ``conv_in`` (the first 3x3 convolution) gets new input
    channels whose weights are zero. At that point the mask and masked-image channels have no
    effect: the new UNet's output equals the old one's for the same latents.

    Args:
        unet (`UNet2DConditionModel`): the text-to-image UNet, ``in_channels=4``.
        extra_channels (`int`, defaults to 5): channels to add (1 mask + 4 masked-image latents).

    Returns:
        `UNet2DConditionModel`: ``in_channels = unet.config.in_channels + extra_channels``;
        ``conv_in.weight`` has shape ``[out, in_channels, 3, 3]`` with ``[:, 4:]`` all zero.
    """
    config = dict(unet.config)
    config["in_channels"] = unet.config.in_channels + extra_channels
    wide = UNet2DConditionModel.from_config(config)
    state = unet.state_dict()
    weight = state["conv_in.weight"]  # [out, 4, 3, 3]
    zeros = weight.new_zeros(weight.shape[0], extra_channels, *weight.shape[2:])
    state["conv_in.weight"] = torch.cat([weight, zeros], dim=1)
    wide.load_state_dict(state)
    return cast(wide, unet.dtype)


def upscaler_vae(vae: AutoencoderKL, scaling_factor: float = X4_UPSCALER_VAE["scaling_factor"]) -> AutoencoderKL:
    """The same autoencoder, with latents rescaled so that ``latents * scaling_factor`` keep unit std.

    ``StableDiffusionUpscalePipeline`` always decodes ``latents / 0.08333``. The `tiny`
    text-to-image VAE was measured to need ``scaling_factor`` ~0.34 instead: used as it is, its
    scaled latents would have a std of ~0.25, and every error of the UNet would come out of the
    decoder 4x larger. This folds the factor ``k = vae.config.scaling_factor / scaling_factor`` into
    the two 1x1 convolutions around the latent: ``quant_conv`` makes the posterior's mean ``k``
    times larger (and its log-variance ``2 ln k`` larger), ``post_quant_conv`` divides its input by
    ``k``. Encoding then decoding gives the same images as before (up to float rounding).

    Args:
        vae (`AutoencoderKL`): a VAE with ``quant_conv`` and ``post_quant_conv`` (SD's have them).
        scaling_factor (`float`, defaults to 0.08333): the scaling factor the new VAE should have.

    Returns:
        `AutoencoderKL`: a new model (``vae`` is left as it was), float32, in eval mode.
    """
    k = float(vae.config.scaling_factor) / scaling_factor
    new = AutoencoderKL.from_config(vae.config, scaling_factor=scaling_factor)
    new.load_state_dict(vae.state_dict())
    new = new.float().eval()
    c = new.config.latent_channels
    with torch.no_grad():
        new.quant_conv.weight[:c] *= k  # mean channels
        new.quant_conv.bias[:c] *= k
        new.quant_conv.bias[c:] += 2 * math.log(k)  # log-variance channels: std grows k times too
        new.post_quant_conv.weight /= k  # [out, in, 1, 1]: undo the factor on the way back
    return new
