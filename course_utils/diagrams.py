"""Diagrams drawn by code, the parts: the latent-diffusion pipeline, the UNet's input channels and blocks, a LoRA.

Lesson 02 draws the pipeline (§1), lessons 06 and 08 the 4 / 7 / 9 input channels; :func:`unet_diagram` (the
UNet as a U) is made for lesson 03, :func:`lora_diagram` (W + B·A for one layer) for lessons 07 and 10.
Every diagram reads its numbers from the models you pass, so the picture shows the profile at hand (`tiny` or
`sd15`), and a diagram that disagrees with the model raises instead of teaching something false.
(:mod:`course_utils.diagrams_steps` draws the steps: the denoising loop, guidance, img2img's strength.)
"""

import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

TEXT_COLOR = "#f7d08a"  # what reads the text embedding
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
            fontsize=8,
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
    _arrow(ax, (6.9, 0.7), (7.7, 0.7), f"x_0 /\n{scale:.5g}")
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


def _cross_attn_band(ax, x, y, w, width_text):
    """The coloured band on a block that reads the text: cross-attention to the text embedding."""
    ax.add_patch(
        FancyBboxPatch((x + 0.06, y + 0.06), w - 0.12, 0.26, boxstyle="square,pad=0", fc=TEXT_COLOR, ec="none")
    )
    ax.text(
        x + w / 2,
        y + 0.19,
        f"reads the text: cross-attention ← [.., {width_text}]",
        ha="center",
        va="center",
        fontsize=8,
    )


def unet_diagram(unet, latent_size: int | None = None) -> plt.Figure:
    """The UNet as a U, read from ``unet.config``: down blocks on the left, the mid block, up blocks on the right.

    Each box shows the block's index and type, its output channels (``block_out_channels``) and the latents' side
    at that level (halved by each down block but the last, doubled by each up block but the last). Arrows across
    the U are the skip connections (``layers_per_block + 1`` tensors per level); every block whose type contains
    ``"CrossAttn"`` (the mid block included) carries a band: it reads the text embedding, ``cross_attention_dim``
    wide.

    Args:
        unet (`UNet2DConditionModel`): the UNet (only its ``config`` is read, so a model on the meta device works).
        latent_size (`int`, *optional*): the latents' side; default ``unet.config.sample_size``.

    Returns:
        `matplotlib.figure.Figure`: the diagram.
    """
    cfg = unet.config
    channels, down, up = list(cfg.block_out_channels), list(cfg.down_block_types), list(cfg.up_block_types)
    levels = len(channels)
    if len(down) != levels or len(up) != levels:
        raise ValueError(f"{levels} levels of channels but {len(down)} down and {len(up)} up blocks: not a U")
    side = latent_size or cfg.sample_size
    if side % 2 ** (levels - 1):
        raise ValueError(
            f"latent size {side} cannot be halved {levels - 1} times: use a multiple of {2 ** (levels - 1)}"
        )
    per = cfg.layers_per_block
    per = list(per) if isinstance(per, (list, tuple)) else [per] * levels
    mid = cfg.get("mid_block_type", "UNetMidBlock2DCrossAttn")
    width_text, row, h, w = cfg.cross_attention_dim, 1.15, 0.9, 3.3
    height = 1.5 + row * (levels + 1)
    fig, ax = plt.subplots(figsize=(10, height))
    ax.set_xlim(0, 10)
    ax.set_ylim(0, height)
    ax.axis("off")
    y = [height - 1.5 - row * i - h for i in range(levels)]  # the box bottoms, level 0 (full size) at the top
    sides = [side // 2**i for i in range(levels)]
    for i in range(levels):
        s = sides[i]
        label = f"down_blocks[{i}]: {down[i]}\n{channels[i]} ch · {s}×{s}" + (
            f" → {s // 2}×{s // 2}" if i < levels - 1 else ""
        )
        j = levels - 1 - i  # the up block on this level
        label_up = f"up_blocks[{j}]: {up[j]}\n{channels[i]} ch · {s}×{s}" + (f" → {s * 2}×{s * 2}" if i > 0 else "")
        for x, text, kind in ((0.15, label, down[i]), (10 - 0.15 - w, label_up, up[j])):
            _box(ax, x, y[i], w, h, "", "#cfe0f3")
            ax.text(
                x + w / 2, y[i] + (0.6 if "CrossAttn" in kind else 0.45), text, ha="center", va="center", fontsize=8.5
            )
            if "CrossAttn" in kind:
                _cross_attn_band(ax, x, y[i], w, width_text)
        _arrow(ax, (0.15 + w, y[i] + h / 2), (10 - 0.15 - w, y[i] + h / 2), f"skip connections ×{per[i] + 1}", dy=0.04)
        if i < levels - 1:
            _arrow(ax, (0.15 + w / 2, y[i]), (0.15 + w / 2, y[i + 1] + h))
            _arrow(ax, (10 - 0.15 - w / 2, y[i + 1] + h), (10 - 0.15 - w / 2, y[i]))
    y_mid, s = y[-1] - row, sides[-1]
    if mid:
        _box(ax, 5 - w / 2, y_mid, w, h, "", "#b9d3ee")
        mid_text = f"mid_block: {mid}\n{channels[-1]} ch · {s}×{s}"
        ax.text(5, y_mid + (0.6 if "CrossAttn" in mid else 0.45), mid_text, ha="center", va="center", fontsize=8.5)
        if "CrossAttn" in mid:
            _cross_attn_band(ax, 5 - w / 2, y_mid, w, width_text)
    else:
        ax.text(5, y_mid + h / 2, "(no mid block)", ha="center", va="center", fontsize=8.5)
    _arrow(ax, (0.15 + w / 2, y[-1]), (5 - w / 2, y_mid + h / 2))
    _arrow(ax, (5 + w / 2, y_mid + h / 2), (10 - 0.15 - w / 2, y[-1]))
    top = height - 1.5
    _arrow(ax, (0.15 + w / 2, top + 0.45), (0.15 + w / 2, top))
    ax.text(0.15 + w / 2 + 0.1, top + 0.5, f"x_t [{cfg.in_channels}, {side}, {side}]", fontsize=8.5, va="bottom")
    _arrow(ax, (10 - 0.15 - w / 2, top), (10 - 0.15 - w / 2, top + 0.45))
    ax.text(
        10 - 0.25 - w / 2, top + 0.5, f"ε̂ [{cfg.out_channels}, {side}, {side}]", fontsize=8.5, va="bottom", ha="right"
    )
    bands = sum("CrossAttn" in k for k in [*down, *up, mid or ""])
    ax.text(
        5,
        height - 0.3,
        f"The UNet: {levels} levels, {side}×{side} down to {s}×{s} and back up",
        ha="center",
        fontsize=10,
    )
    ax.text(
        5,
        height - 0.62,
        f"the text embedding ({width_text} wide = cross_attention_dim) enters the {bands} blocks with a band",
        ha="center",
        fontsize=8.5,
        color="#7a4b00",
    )
    fig.tight_layout()
    plt.close(fig)
    return fig


def lora_diagram(layer, rank: int | None = None, name: str | None = None) -> plt.Figure:
    """LoRA on one linear layer as ``W + B·A``, each matrix a box drawn to scale, with its parameter count.

    ``W`` is ``out × in`` (frozen), ``B`` is ``out × r`` and ``A`` is ``r × in``: the layer computes
    ``W x + (alpha / r)·B A x`` and LoRA trains ``r·(in + out)`` numbers instead of ``in·out``. ``B`` starts at
    zero, so before training the layer is exactly the original.

    Args:
        layer (`torch.nn.Linear` or a peft LoRA layer): the layer; a peft-wrapped layer (``unet.add_adapter``)
            gives its ``base_layer``'s shape, its rank and whether its ``B`` is still zero.
        rank (`int`, *optional*): the rank r, at least 1 and at most ``min(in, out)``; required for a plain
            ``Linear``, for a peft layer it must equal the adapter's rank (default: that rank).
        name (`str`, *optional*): the layer's name for the title, e.g. ``"down_blocks.0.attentions.0...to_k"``.

    Returns:
        `matplotlib.figure.Figure`: the diagram.
    """
    base = getattr(layer, "base_layer", layer)
    weight = getattr(base, "weight", None)
    if not hasattr(base, "in_features") or weight is None or weight.ndim != 2:
        raise TypeError(f"lora_diagram draws a linear layer (torch.nn.Linear), not {type(base).__name__}")
    n_in, n_out, b_zero = base.in_features, base.out_features, None
    if hasattr(layer, "lora_B") and len(layer.lora_B):
        adapter = next(iter(layer.lora_B))
        if rank is not None and rank != layer.r[adapter]:
            raise ValueError(f"rank={rank}, but this layer's LoRA {adapter!r} has rank {layer.r[adapter]}")
        rank, b_zero = layer.r[adapter], bool((layer.lora_B[adapter].weight == 0).all())
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= min(n_in, n_out):
        raise ValueError(
            f"rank must be an integer from 1 to min(in, out) = {min(n_in, n_out)}, not {rank!r}: "
            "B·A cannot have a higher rank than W"
        )
    full, lora = n_in * n_out, rank * (n_in + n_out)
    unit = min(3.0 / n_in, 2.0 / n_out)  # inches per column or row: every box is drawn to this scale
    wide, tall, thin = n_in * unit, n_out * unit, max(rank * unit, 0.03)  # thin: B's width, A's height (visible)
    width = max(10.0, 2 * wide + thin + 2.6)
    x_w = (width - (2 * wide + thin + 1.8)) / 2 + 0.2
    x_b, x_a, y, mid = x_w + wide + 1.0, x_w + wide + thin + 1.8, 2.3 - tall / 2, 2.3
    fig, ax = plt.subplots(figsize=(10, 4.2))
    ax.set(xlim=(0, width), ylim=(0, 4.2 * width / 10), aspect="equal")
    ax.axis("off")
    for x, y_box, bw, bh, color in (
        (x_w, y, wide, tall, "#c9c9c9"),
        (x_b, y, thin, tall, "#f4b183"),
        (x_a, mid - thin / 2, wide, thin, "#a9d18e"),
    ):
        ax.add_patch(FancyBboxPatch((x, y_box), bw, bh, boxstyle="square,pad=0", fc=color, ec="#333333"))
    label = dict(ha="center", fontsize=8.5)
    ax.text(
        x_w + wide / 2, y + tall + 0.1, f"W (frozen): {n_out} × {n_in}\n= {full:,} parameters", va="bottom", **label
    )
    ax.text(x_w + wide / 2, y - 0.1, f"in = {n_in}", va="top", **label)
    ax.text(x_w - 0.1, mid, f"out = {n_out}", ha="right", va="center", fontsize=8.5, rotation=90)
    ax.text(x_b - 0.5, mid, "+", ha="center", va="center", fontsize=18)
    ax.text(x_a - 0.4, mid, "·", ha="center", va="center", fontsize=28)
    now = "" if b_zero is None else f"\n(this layer's B: {'still zero' if b_zero else 'trained, not zero'})"
    ax.text(x_b + thin / 2, y - 0.1, f"B: {n_out} × {rank}\n= {n_out * rank:,}\nstarts at zero{now}", va="top", **label)
    ax.text(
        x_a + wide / 2,
        mid + thin / 2 + 0.1,
        f"A: {rank} × {n_in} = {rank * n_in:,}\n(random at the start)",
        va="bottom",
        **label,
    )
    title = f"LoRA of rank r = {rank} on {name or type(base).__name__}: W x + (alpha / r)·B A x"
    ax.text(width / 2, 4.2 * width / 10 - 0.15, title, ha="center", va="top", fontsize=10)
    ax.text(
        width / 2,
        0.2,
        f"trained: r·(in + out) = {rank}·({n_in} + {n_out}) = {lora:,} parameters = {lora / full:.1%} of W's "
        f"in·out = {full:,}.  B starts at zero, so at step 0 the layer is exactly W.",
        **label,
    )
    fig.tight_layout()
    plt.close(fig)
    return fig
