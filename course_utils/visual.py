"""Pictures of what happens inside: decoded latents, raw latent channels, grids, a step slider.

Lesson 03, §6 ("Watch it happen") is where they come together; lesson 02, §6 first shows latents, and every
lesson lays its pictures out with :func:`grid`.
"""
import io

import numpy as np
import torch
from diffusers.utils import make_image_grid
from PIL import Image

from . import by_hand


@torch.no_grad()
def decode_latents(vae, latents: torch.Tensor) -> list[Image.Image]:
    """Decode SD latents to images with the VAE.

    Lesson 02, §6 decodes latents by hand; this is that (``by_hand.decode`` + ``by_hand.to_pil``), used from
    lesson 03 (§2, §6) on, in lessons 04-07 too.

    Args:
        vae (`AutoencoderKL`): the pipeline's VAE.
        latents (`torch.Tensor`): shape ``[batch, 4, h, w]``, *scaled* latents as the UNet sees them.

    Returns:
        `list[PIL.Image.Image]`: ``batch`` images of size ``f*w x f*h`` (f = 8 for SD 1.5, 4 for `tiny`).
    """
    return by_hand.to_pil(by_hand.decode(vae, latents))  # undo the scaling, decode, [-1, 1] -> PIL


def latent_to_image(latents: torch.Tensor, tile: int = 128) -> Image.Image:
    """Show a latent's channels side by side as grayscale tiles.

    Lesson 02, §6 first shows a photo's latent channels with it; used again in lessons 03 (§6) and 08 (§3).

    Each channel is stretched to black..white on its own, so the picture shows structure,
    not absolute values.

    Args:
        latents (`torch.Tensor`): shape ``[channels, h, w]`` or ``[1, channels, h, w]``.
        tile (`int`, defaults to 128): the side of each channel's tile in pixels (nearest-neighbour upscaled).

    Returns:
        `PIL.Image.Image`: one row of ``channels`` tiles, ``channels*tile`` x ``tile`` pixels.
    """
    if latents.dim() == 4:
        if latents.shape[0] != 1:
            raise ValueError(f"latent_to_image shows one latent; got a batch of {latents.shape[0]}, index it first")
        latents = latents[0]
    x = latents.detach().float().cpu()
    lo = x.amin(dim=(1, 2), keepdim=True)
    hi = x.amax(dim=(1, 2), keepdim=True)
    x = ((x - lo) / (hi - lo).clamp_min(1e-8) * 255).round().to(torch.uint8).numpy()
    tiles = [Image.fromarray(c, mode="L").resize((tile, tile), Image.Resampling.NEAREST).convert("RGB") for c in x]
    return make_image_grid(tiles, rows=1, cols=len(tiles))


def grid(images: list[Image.Image], cols: int | None = None, size: int | None = None) -> Image.Image:
    """Lay images out in a grid with diffusers' ``make_image_grid``.

    A display helper, no lesson derives it: used from lesson 01, §2 on, in every lesson.

    Args:
        images (`list[PIL.Image.Image]`): the images, any sizes.
        cols (`int`, *optional*): columns; default all in one row.
        size (`int`, *optional*): resize every image to ``size x size`` first (default: the first image's size).

    Returns:
        `PIL.Image.Image`: the grid.
    """
    if not images:
        raise ValueError("grid() needs at least one image")
    cols = cols or len(images)
    rows = -(-len(images) // cols)
    w, h = (size, size) if size else images[0].size
    images = [im.resize((w, h)) if im.size != (w, h) else im for im in images]
    images += [Image.new("RGB", (w, h), "white")] * (rows * cols - len(images))
    return make_image_grid(images, rows=rows, cols=cols)


def step_slider(images: list[Image.Image], labels: list[str] | None = None):
    """An ipywidgets slider that shows one image per position (e.g. one per denoising step).

    Lesson 03, §6 shows every step of the loop with it.

    Args:
        images (`list[PIL.Image.Image]`): the frames.
        labels (`list[str]`, *optional*): a caption per frame, e.g. ``"step 3, t=841"``.

    Returns:
        `ipywidgets.VBox`: display it (it is the last expression of a cell, or ``display(...)``). The
        slider counts from 1, as captions such as "step 3/26" do; it starts on the last frame.
    """
    import ipywidgets as widgets

    labels = labels or [f"frame {i + 1}" for i in range(len(images))]

    def png(im):
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        return buf.getvalue()

    frames = [png(im) for im in images]
    view = widgets.Image(value=frames[-1], format="png")
    caption = widgets.Label(labels[-1])
    slider = widgets.IntSlider(value=len(images), min=1, max=len(images), description="step")

    def on_change(change):
        view.value = frames[change["new"] - 1]
        caption.value = labels[change["new"] - 1]

    slider.observe(on_change, names="value")
    return widgets.VBox([slider, caption, view])


def to_array(image: Image.Image) -> np.ndarray:
    """An image as a float array in [0, 1], shape ``[height, width, 3]`` (handy for differences).

    Lesson 07, §5 measures with it what an embedding changes in the picture.

    Args:
        image (`PIL.Image.Image`): any mode; converted to RGB.

    Returns:
        `np.ndarray`: float32, ``[height, width, 3]``.
    """
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
