"""Pictures of what happens inside: decoded latents, raw latent channels, grids, a step slider.

Lesson 03, §6 ("Watch it happen") is where they come together; lesson 02, §6 first shows latents, and every
lesson lays its pictures out with :func:`grid`.
"""

import base64
import functools
import html
import io
import uuid

import numpy as np
import torch
from diffusers.utils import make_image_grid
from PIL import Image, ImageDraw, ImageFont

from . import by_hand

DECODE_BATCH = 4  # latents per VAE call: SD 1.5's decoder needs about 0.4 GiB per 512x512 image in float16


@torch.no_grad()
def decode_latents(vae, latents: torch.Tensor, batch_size: int = DECODE_BATCH) -> list[Image.Image]:
    """Decode SD latents to images with the VAE.

    Lesson 02, §6 decodes latents by hand; this is that (``by_hand.decode`` + ``by_hand.to_pil``), used from
    lesson 03 (§2, §6) on, in lessons 04-07 too. A few latents per call, as ``pipe.vae.enable_slicing()`` does one:
    lesson 03 decodes 12 at a time, which in one call would take 4.6 GiB on SD 1.5 (lesson 9's table).

    Args:
        vae (`AutoencoderKL`): the pipeline's VAE.
        latents (`torch.Tensor`): shape ``[batch, 4, h, w]``, *scaled* latents as the UNet sees them.
        batch_size (`int`, defaults to ``DECODE_BATCH``): latents per VAE call.

    Returns:
        `list[PIL.Image.Image]`: ``batch`` images of size ``f*w x f*h`` (f = 8 for SD 1.5, 4 for `tiny`).
    """
    images = []
    for k in range(0, len(latents), batch_size):  # undo the scaling, decode, [-1, 1] -> PIL
        images += by_hand.to_pil(by_hand.decode(vae, latents[k : k + batch_size]))
    return images


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


def grid(
    images: list[Image.Image],
    cols: int | None = None,
    size: int | None = None,
    titles: list[str] | None = None,
    min_width: int | None = None,
) -> Image.Image:
    """Lay images out in a grid with diffusers' ``make_image_grid``, optionally with a title under each.

    A display helper, no lesson derives it: used from lesson 01, §2 on, in every lesson. Small images
    (`tiny` draws 64x64) are enlarged with nearest-neighbour, so each latent pixel stays a sharp square
    instead of a blur; images larger than ``size`` are shrunk smoothly (Lanczos).

    Args:
        images (`list[PIL.Image.Image]`): the images, any sizes.
        cols (`int`, *optional*): columns; default all in one row.
        size (`int`, *optional*): resize every image to ``size x size`` first (default: the first image's size).
        titles (`list[str]`, *optional*): one caption per image, drawn in a white strip under it.
        min_width (`int`, *optional*): enlarge every image by the same whole factor (nearest-neighbour, the
            aspect ratio kept) until the first is at least this wide, e.g. 256 for `tiny`'s 64x64 pictures.

    Returns:
        `PIL.Image.Image`: the grid.
    """
    if not images:
        raise ValueError("grid() needs at least one image")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"grid() got {len(images)} images but {len(titles)} titles: give one title per image")
    cols = cols or len(images)
    rows = -(-len(images) // cols)
    w, h = (size, size) if size else images[0].size
    if min_width:
        zoom = max(1, min_width // w)
        w, h = w * zoom, h * zoom
    images = [_resized(im.convert("RGB"), w, h) for im in images]
    if titles is not None:
        images = [_with_title(im, text) for im, text in zip(images, titles)]
        h = max(im.height for im in images)
        images = [_padded(im, h) for im in images]
    images += [Image.new("RGB", (w, h), "white")] * (rows * cols - len(images))
    return make_image_grid(images, rows=rows, cols=cols)


def _resized(image: Image.Image, w: int, h: int) -> Image.Image:
    if image.size == (w, h):
        return image
    enlarging = w >= image.width and h >= image.height
    return image.resize((w, h), Image.Resampling.NEAREST if enlarging else Image.Resampling.LANCZOS)


def _with_title(image: Image.Image, text: str) -> Image.Image:
    font_size = max(10, min(16, image.width // 14))
    font = _font(font_size)
    lines = _wrap(text, font, image.width - 4)
    strip = Image.new("RGB", (image.width, image.height + (font_size + 3) * len(lines) + 4), "white")
    strip.paste(image, (0, 0))
    draw = ImageDraw.Draw(strip)
    for i, line in enumerate(lines):
        draw.text((2, image.height + 2 + i * (font_size + 3)), line, fill="black", font=font)
    return strip


def _padded(image: Image.Image, height: int) -> Image.Image:
    if image.height == height:
        return image
    out = Image.new("RGB", (image.width, height), "white")
    out.paste(image, (0, 0))
    return out


def _font(size: int):
    """DejaVu Sans (shipped with matplotlib, so it draws symbols such as x̂₀ and ε̂), else PIL's default."""
    try:
        from matplotlib import font_manager

        return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)
    except (ImportError, OSError):
        return ImageFont.load_default(size=size)


def _wrap(text: str, font, width: int, max_lines: int = 3) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if line and font.getlength(trial) > width:
            lines.append(line)
            line = word
        else:
            line = trial
    lines.append(line)
    return lines[:max_lines]


def step_slider(images: list[Image.Image], labels: list[str] | None = None):
    """An ipywidgets slider that shows one image per position (e.g. one per denoising step), with a still copy.

    Lesson 03, §6 shows every step of the loop with it.

    A widget needs a running kernel: in exported HTML, or in a notebook opened without running it, it is
    empty or stuck on one frame. So displaying the slider also displays a *still copy* under it
    (:func:`still_player`): the frames as a small self-contained HTML player (a range input and a play
    button; the frames inline as base64, no download, no kernel) that shows the last frame even where its
    script cannot run. ``python -m course_utils course`` leaves the live slider out of the HTML it exports.

    Args:
        images (`list[PIL.Image.Image]`): the frames.
        labels (`list[str]`, *optional*): a caption per frame, e.g. ``"step 3, t=841"``.

    Returns:
        `ipywidgets.VBox`: ``[slider, caption, image]``; display it (it is the last expression of a cell, or
        ``display(...)``). The slider counts from 1, as captions such as "step 3/26" do; it starts on the last
        frame.
    """
    import ipywidgets as widgets

    if not images:
        raise ValueError("step_slider() needs at least one image")
    labels = labels or [f"frame {i + 1}" for i in range(len(images))]
    if len(labels) != len(images):
        raise ValueError(f"step_slider() got {len(images)} images but {len(labels)} labels: give one label per image")
    frames = [_png(im) for im in images]
    view = widgets.Image(value=frames[-1], format="png")
    caption = widgets.Label(labels[-1])
    slider = widgets.IntSlider(
        value=len(images), min=1, max=len(images), description="step", layout=widgets.Layout(width="60%")
    )
    for widget, name in ((slider, "slider"), (caption, "caption"), (view, "image")):
        widget.add_class(f"course-step-{name}")  # CSS classes a browser test finds them by

    def on_change(change):
        view.value = frames[change["new"] - 1]
        caption.value = labels[change["new"] - 1]

    slider.observe(on_change, names="value")
    box = _slider_box_class()([slider, caption, view])
    box.still = lambda: still_player(images, labels, encoded=frames)
    return box


LIVE_ONLY_TAG = "course-live-widget"
"""Output tag of a widget that only works with a kernel; the course's HTML export (``cli``) leaves such outputs out."""


@functools.cache
def _slider_box_class():
    import ipywidgets as widgets

    class StepSliderBox(widgets.VBox):
        """A VBox that, displayed, shows itself and then its still copy (a second output)."""

        still = None

        def _ipython_display_(self):
            from IPython.display import display

            modern = hasattr(self, "_repr_mimebundle_")  # ipywidgets 8; 7.7 (Colab's) displays itself
            if modern:
                data = self._repr_mimebundle_()
            else:  # ipywidgets 7.7 (Colab's): the bundle its Widget._ipython_display_ builds
                data = {
                    "application/vnd.jupyter.widget-view+json": {
                        "version_major": 2,
                        "version_minor": 0,
                        "model_id": self.model_id,
                    }
                }
            data["text/plain"] = (
                f"step slider over {self.children[0].max} frames: it moves with a running "
                "kernel (run the cell); the still copy below works without one"
            )
            display(data, raw=True, metadata={"tags": [LIVE_ONLY_TAG]})
            if not modern:
                self._handle_displayed()  # what ipywidgets 7's display does next (calls on_displayed callbacks)
            if self.still is not None:
                display(
                    {
                        "text/html": self.still(),
                        "text/plain": f"still copy of the {self.children[0].max} frames "
                        "(an HTML player: open the notebook in Jupyter or its HTML export)",
                    },
                    raw=True,
                )

    return StepSliderBox


def still_player(
    images: list[Image.Image],
    labels: list[str] | None = None,
    max_frames: int = 26,
    max_pixels: int = 1024 * 256,
    encoded: list[bytes] | None = None,
) -> str:
    """Frames as one self-contained HTML block: a range input and a play button over inline base64 images.

    The still copy :func:`step_slider` shows: it needs no kernel, no widget library and no network (the
    frames are ``data:`` URIs inside the HTML), so it works in exported HTML opened offline. Without
    JavaScript (a notebook Jupyter does not trust) it still shows the last frame, and every frame under
    "all frames".

    Args:
        images (`list[PIL.Image.Image]`): the frames.
        labels (`list[str]`, *optional*): a caption per frame (default ``"frame i"``, counting from 1).
        max_frames (`int`, defaults to 26): keep at most this many frames, evenly spaced, first and last included.
        max_pixels (`int`, defaults to 1024*256): shrink (Lanczos) any frame larger than this many pixels.
        encoded (`list[bytes]`, *optional*): the frames already encoded as PNG (reused when not shrunk).

    Returns:
        `str`: the HTML; show it with ``IPython.display.HTML``.
    """
    labels = labels or [f"frame {i + 1}" for i in range(len(images))]
    n, max_frames = len(images), max(2, max_frames)
    keep = sorted({round(i * (n - 1) / (max_frames - 1)) for i in range(max_frames)}) if n > max_frames else range(n)
    uris, captions = [], []
    for i in keep:
        image = images[i]
        data = encoded[i] if encoded is not None else None
        if image.width * image.height > max_pixels:
            scale = (max_pixels / (image.width * image.height)) ** 0.5
            image = image.resize(
                (max(1, int(image.width * scale)), max(1, int(image.height * scale))), Image.Resampling.LANCZOS
            )
            data = None
        uris.append(_data_uri(image, data))
        captions.append(labels[i])
    ident = f"cu-still-{uuid.uuid4().hex[:12]}"
    thumb = 256 if images[-1].width > 2 * images[-1].height else 160  # wide strips get wider thumbnails
    note = f"{len(uris)} of {n} frames" if len(uris) < n else f"{n} frames"
    cells = "".join(
        f'<figure style="display:inline-block;vertical-align:top;width:{thumb}px;margin:2px">'
        f'<img src="{uri}" alt="{html.escape(c)}" title="{html.escape(c)}" style="width:100%">'
        f'<figcaption style="font-size:11px">{html.escape(c)}</figcaption></figure>'
        for uri, c in zip(uris, captions)
    )
    script = _PLAYER_JS.replace("ROOT_ID", ident)
    return (
        f'<div id="{ident}" class="course-still" style="font-family:sans-serif;font-size:13px">'
        f'<div style="color:#555">Still copy ({note}; works without a kernel):</div>'
        f'<img class="course-still-frame" src="{uris[-1]}" alt="{html.escape(captions[-1])}" '
        f'style="max-width:100%;image-rendering:pixelated">'
        f'<div class="course-still-caption">{html.escape(captions[-1])}</div>'
        f'<details class="course-still-all"><summary>all {len(uris)} frames</summary>{cells}</details>'
        f"<script>{script}</script></div>"
    )


# Builds the controls (so a reader without JavaScript sees no dead ones) and reads the frames back from the
# <img> tags under "all frames", so each frame is in the page once (the last twice: it is also the one on show).
_PLAYER_JS = """
(function () {
  var here = document.currentScript;
  var root = (here && here.closest(".course-still")) || document.getElementById("ROOT_ID");
  if (!root || root.dataset.ready) return;
  root.dataset.ready = "1";
  var shown = root.querySelector(".course-still-frame");
  var caption = root.querySelector(".course-still-caption");
  var frames = Array.prototype.map.call(root.querySelectorAll(".course-still-all img"), function (im) {
    return [im.src, im.title];
  });
  var bar = document.createElement("div");
  var play = document.createElement("button");
  var range = document.createElement("input");
  range.type = "range"; range.min = 1; range.max = frames.length; range.value = frames.length;
  range.className = "course-still-range"; range.style.width = "60%";
  play.textContent = "\\u25B6 play"; play.className = "course-still-play";
  var timer = null;
  function show(i) {
    range.value = i; shown.src = frames[i - 1][0]; shown.alt = frames[i - 1][1];
    caption.textContent = frames[i - 1][1];
  }
  function stop() { clearInterval(timer); timer = null; play.textContent = "\\u25B6 play"; }
  range.addEventListener("input", function () { stop(); show(+range.value); });
  play.addEventListener("click", function () {
    if (timer) { stop(); return; }
    var i = +range.value >= frames.length ? 0 : +range.value;
    play.textContent = "\\u275A\\u275A pause";
    timer = setInterval(function () { i += 1; show(i); if (i >= frames.length) stop(); }, 250);
  });
  bar.appendChild(play); bar.appendChild(range);
  root.insertBefore(bar, shown);
})();
"""


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _data_uri(image: Image.Image, png: bytes | None = None) -> str:
    """PNG, or JPEG where that is much smaller (photos); nearest-enlarged `tiny` frames stay sharp PNGs."""
    png = png or _png(image)
    kind, data = "png", png
    if len(png) > image.width * image.height:  # over 1 byte a pixel: a photo, not flat blocks
        buf = io.BytesIO()
        image.convert("RGB").save(buf, format="JPEG", quality=75)
        if len(buf.getvalue()) < len(png) // 2:
            kind, data = "jpeg", buf.getvalue()
    return f"data:image/{kind};base64,{base64.b64encode(data).decode('ascii')}"


def to_array(image: Image.Image) -> np.ndarray:
    """An image as a float array in [0, 1], shape ``[height, width, 3]`` (handy for differences).

    Lesson 07, §5 measures with it what an embedding changes in the picture.

    Args:
        image (`PIL.Image.Image`): any mode; converted to RGB.

    Returns:
        `np.ndarray`: float32, ``[height, width, 3]``.
    """
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
