"""Diagrams drawn by code: the latent-diffusion pipeline and what the UNet's input channels hold.

Lesson 02 draws the pipeline (§1), lessons 06 and 08 the 4 / 7 / 9 input channels. Both diagrams read their
numbers from the models when you pass them, so the picture shows the profile at hand (`tiny` or `sd15`), and a
diagram that disagrees with the model raises instead of teaching something false.
"""

import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

# What fills each input channel of the three UNets, in the order the pipelines concatenate them.
CHANNELS = {
    "text2img": [("noisy latents x_t", 4, "#7aa6d8")],
    "upscale": [("noisy latents x_t", 4, "#7aa6d8"), ("low-res image (RGB, noised)", 3, "#e3a857")],
    "inpaint": [
        ("noisy latents x_t", 4, "#7aa6d8"),
        ("mask (1 = repaint)", 1, "#8c8c8c"),
        ("masked-image latents", 4, "#8cc084"),
    ],
}


def _box(ax, x, y, w, h, text, color):
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.08", fc=color, ec="#333333"))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=8.5, wrap=True)


def _arrow(ax, start, end, label=None, dy=0.12):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=12, color="#333333", lw=1.2))
    if label:
        ax.text(
            (start[0] + end[0]) / 2,
            (start[1] + end[1]) / 2 + dy,
            label,
            ha="center",
            va="bottom",
            fontsize=7.5,
            color="#1f4e79",
        )


def pipeline_diagram(pipe=None, height: int | None = None) -> plt.Figure:
    """The latent-diffusion pipeline as boxes and arrows, labelled with the tensor shapes of ``pipe``.

    Text → tokenizer → text encoder → (embeddings) → the UNet loop on latents, driven by the scheduler →
    latents divided by the VAE's ``scaling_factor`` → VAE decoder → image. With a pipeline, every shape is read from its parts' configs.

    Args:
        pipe (`StableDiffusionPipeline`, *optional*): the pipeline whose shapes to print; without it the
            labels are SD 1.5's (77 ids, 768 wide, latents 4x64x64, image 3x512x512).
        height (`int`, *optional*): the image side; default the UNet's ``sample_size`` times the VAE factor.

    Returns:
        `matplotlib.figure.Figure`: the diagram (display it, or ``fig.savefig(...)``).
    """
    if pipe is None:
        tokens, width, channels, factor, side, scale = 77, 768, 4, 8, height or 512, 0.18215
    else:
        tokens = pipe.tokenizer.model_max_length
        width = pipe.text_encoder.config.hidden_size
        channels = pipe.unet.config.in_channels
        factor = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
        side = height or pipe.unet.config.sample_size * factor
        scale = pipe.vae.config.scaling_factor
    latent = side // factor
    fig, ax = plt.subplots(figsize=(11, 3.4))
    ax.set_xlim(0, 11)
    ax.set_ylim(0, 3.4)
    ax.axis("off")
    _box(ax, 0.1, 2.2, 1.4, 0.8, '"a prompt"', "#f3f3f3")
    _box(ax, 2.1, 2.2, 1.4, 0.8, "tokenizer", "#f7e3b5")
    _box(ax, 4.3, 2.2, 1.6, 0.8, "text encoder\n(CLIP)", "#f7e3b5")
    _box(ax, 0.1, 0.3, 1.4, 0.8, "random noise\nx_T (seed)", "#f3f3f3")
    _box(
        ax,
        4.3,
        0.2,
        2.6,
        1.1,
        "UNet predicts the noise ε̂\n+ scheduler.step: x_t → x_{t-1}\n(repeat for each timestep)",
        "#cfe0f3",
    )
    _box(ax, 7.7, 0.3, 1.4, 0.8, "VAE decoder", "#d9ecd0")
    _box(ax, 9.6, 0.3, 1.3, 0.8, "image", "#f3f3f3")
    _arrow(ax, (1.5, 2.6), (2.1, 2.6))
    _arrow(ax, (3.5, 2.6), (4.3, 2.6), f"ids [1, {tokens}]")
    _arrow(ax, (5.1, 2.2), (5.1, 1.3), None)
    ax.text(5.2, 1.75, f"embeddings [1, {tokens}, {width}]", fontsize=7.5, color="#1f4e79", va="center")
    _arrow(ax, (1.5, 0.7), (4.3, 0.7), f"latents [1, {channels}, {latent}, {latent}]")
    _arrow(ax, (6.9, 0.7), (7.7, 0.7), f"x_0 / {scale:g}")
    _arrow(ax, (9.1, 0.7), (9.6, 0.7), None)
    ax.text(10.25, 0.1, f"[1, 3, {side}, {side}]", fontsize=7.5, color="#1f4e79", ha="center")
    ax.text(
        5.6,
        3.25,
        "Everything between noise and decoder happens on the small latents "
        f"({latent}x{latent}x{channels}), not on pixels ({side}x{side}x3).",
        ha="center",
        fontsize=8.5,
    )
    fig.tight_layout()
    plt.close(fig)  # returned, not drawn twice
    return fig


def input_channels_diagram(kind: str, unet=None) -> plt.Figure:
    """What the UNet's input channels hold for one kind of pipeline, one square per channel.

    Args:
        kind (`str`): ``"text2img"`` (4 channels), ``"upscale"`` (7: latents + the low-res RGB image) or
            ``"inpaint"`` (9: latents + mask + masked-image latents).
        unet (`UNet2DConditionModel`, *optional*): if given, its ``config.in_channels`` must equal the
            diagram's count (a `ValueError` otherwise), so the picture is checked against the model.

    Returns:
        `matplotlib.figure.Figure`: the diagram.
    """
    if kind not in CHANNELS:
        raise ValueError(f"kind must be one of {sorted(CHANNELS)}, not {kind!r}")
    parts = CHANNELS[kind]
    total = sum(n for _, n, _ in parts)
    if unet is not None and unet.config.in_channels != total:
        raise ValueError(
            f"this UNet takes {unet.config.in_channels} input channels, the {kind!r} diagram "
            f"shows {total}: pass the UNet of a pipeline of kind {kind!r}"
        )
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * total, 2.1))
    ax.set_xlim(-0.2, total * 0.75 + 0.3)
    ax.set_ylim(-0.9, 1.4)
    ax.axis("off")
    x = 0.0
    for label, n, color in parts:
        for i in range(n):
            ax.add_patch(FancyBboxPatch((x + 0.75 * i, 0), 0.6, 0.6, boxstyle="square,pad=0", fc=color, ec="#333333"))
            ax.text(x + 0.75 * i + 0.3, 0.3, str(int(x / 0.75) + i), ha="center", va="center", fontsize=8)
        ax.annotate(
            "",
            xy=(x - 0.05, -0.15),
            xytext=(x + 0.75 * n - 0.1, -0.15),
            arrowprops=dict(arrowstyle="-", color="#333333"),
        )
        ax.text(x + (0.75 * n - 0.15) / 2, -0.25, f"{label}\n({n})", ha="center", va="top", fontsize=7.5, wrap=True)
        x += 0.75 * n
    ax.text(
        (total * 0.75 - 0.15) / 2,
        0.95,
        f"{kind}: the UNet's input has {total} channels (torch.cat on dim 1)",
        ha="center",
        fontsize=9,
    )
    fig.tight_layout()
    plt.close(fig)
    return fig
