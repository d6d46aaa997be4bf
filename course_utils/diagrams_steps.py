"""Diagrams of the steps, drawn by code: the denoising loop, classifier-free guidance and img2img's strength.

Made for lesson 03 (the loop, guidance), lesson 04 (the strength timeline) and lesson 05 (guidance with a negative
prompt). Every number comes from the objects passed in (the scheduler's timesteps, the latents' shape, the UNet's
real noise predictions), so the picture shows the profile at hand; input a diagram cannot draw truthfully raises.
(:mod:`course_utils.diagrams` draws the parts: the pipeline, the UNet's channels and blocks, a LoRA.)
"""

import copy
import numbers

import matplotlib.pyplot as plt
import torch
from matplotlib.patches import FancyArrowPatch, Rectangle

from .diagrams import _arrow, _box

COLORS = {"uncond": "#4f81bd", "text": "#e46c0a", "guided": "#2e8b57", "step": "#c0504d", "negative": "#7030a0"}


def _t(value) -> str:
    """A timestep as printed: ``901`` for 901 or 901.0, ``936.5`` for a fractional one."""
    return f"{float(value):g}"


def _timestep_list(timesteps) -> str:
    """``"t = 901, 801, …, 1"``: the first two and the last timestep."""
    shown = [_t(t) for t in timesteps]
    return "t = " + (", ".join(shown) if len(shown) <= 3 else f"{shown[0]}, {shown[1]}, …, {shown[-1]}")


def loop_diagram(timesteps, latent_shape, guidance: bool = True, vae_scale_factor: int | None = None) -> plt.Figure:
    """The denoising loop as a flowchart: x_T → UNet → (guidance) → ``scheduler.step`` → x_{t-1} → back, then decode.

    Args:
        timesteps (`torch.Tensor` or `list`): the real ``scheduler.timesteps`` after ``set_timesteps``, shape ``[n]``
            (n UNet calls: PNDM lists its first timestep twice).
        latent_shape (`tuple` or `torch.Size`): the latents' shape ``[batch, channels, h, w]``, e.g. ``x_T.shape``.
        guidance (`bool`, *optional*, defaults to `True`): classifier-free guidance: the UNet runs on a batch of
            2 × batch (unconditional and text) and the two predictions are combined.
        vae_scale_factor (`int`, *optional*): ``pipe.vae_scale_factor``; if given, the image's shape is printed.

    Returns:
        `matplotlib.figure.Figure`: the diagram.
    """
    steps = [float(t) for t in torch.as_tensor(timesteps).flatten()]
    shape = [int(n) for n in latent_shape]
    if not steps:
        raise ValueError("no timesteps: call scheduler.set_timesteps(n) first and pass scheduler.timesteps")
    if len(shape) != 4:
        raise ValueError(f"latent_shape must be [batch, channels, h, w], not {shape}")
    batch, channels, h, w = shape
    fig, ax = plt.subplots(figsize=(10, 4.2))
    ax.set(xlim=(0, 10), ylim=(0, 4.2))
    ax.axis("off")
    line = dict(color="#1f4e79", lw=1.4)
    _box(ax, 0.1, 1.9, 1.4, 0.9, f"x_T: noise\n{shape}", "#f3f3f3")
    unet = "UNet(x_t, t, text)" + (f"\nbatch of {2 * batch}:\n[uncond, text]" if guidance else "")
    _box(ax, 2.1, 1.8, 1.6, 1.1, unet, "#cfe0f3")
    _box(
        ax, 2.1, 0.3, 1.6, 0.8, "text embeddings" + ("\n[uncond, prompt]" if guidance else "\n(the prompt)"), "#f7e3b5"
    )
    _box(ax, 6.5, 1.9, 1.4, 0.9, "scheduler.step\n(ε̂, t, x_t)", "#cfe0f3")
    _box(ax, 8.5, 1.9, 1.4, 0.9, f"x_(t-1)\n{shape}", "#f3f3f3")
    _arrow(ax, (1.5, 2.35), (2.1, 2.35), "x_t", dy=0.06)
    _arrow(ax, (2.9, 1.1), (2.9, 1.8))
    if guidance:
        _box(ax, 4.5, 1.85, 1.3, 1.0, "guidance\nε̂ = ε̂_u +\ns·(ε̂_t − ε̂_u)", "#f7d08a")
        _arrow(ax, (3.7, 2.35), (4.5, 2.35), "ε̂_u, ε̂_t", dy=0.06)
        _arrow(ax, (5.8, 2.35), (6.5, 2.35), "ε̂", dy=0.06)
    else:
        _arrow(ax, (3.7, 2.35), (6.5, 2.35), f"ε̂ {shape}", dy=0.06)
    _arrow(ax, (7.9, 2.35), (8.5, 2.35))
    ax.plot([9.2, 9.2, 2.9], [2.8, 3.3, 3.3], **line)  # the loop: up from x_(t-1), left, down into the UNet
    ax.add_patch(FancyArrowPatch((2.9, 3.3), (2.9, 2.9), arrowstyle="-|>", mutation_scale=12, **line))
    label = f"x_t ← x_(t-1): repeat for each of the {len(steps)} timesteps, {_timestep_list(steps)}"
    ax.text(6.05, 3.38, label, ha="center", va="bottom", fontsize=9, color="#1f4e79")
    side = f"[{batch}, 3, {h * vae_scale_factor}, {w * vae_scale_factor}]" if vae_scale_factor else "[batch, 3, H, W]"
    _box(ax, 8.5, 0.3, 1.4, 0.8, "VAE decode", "#d9ecd0")
    _box(ax, 6.5, 0.3, 1.4, 0.8, f"image\n{side}", "#f3f3f3")
    _arrow(ax, (9.2, 1.9), (9.2, 1.1))
    ax.text(9.1, 1.5, f"after the last step (t = {_t(steps[-1])})", ha="right", va="center", fontsize=8.5)
    _arrow(ax, (8.5, 0.7), (7.9, 0.7))
    kind = "with classifier-free guidance" if guidance else "without guidance (one prediction per step)"
    ax.text(
        5,
        4.1,
        f"The denoising loop, {kind}: {len(steps)} UNet calls on latents {shape}",
        ha="center",
        va="top",
        fontsize=10,
    )
    fig.tight_layout()
    plt.close(fig)
    return fig


def guidance_diagram(eps_uncond, eps_text, guidance_scale: float, eps_negative=None) -> plt.Figure:
    """Classifier-free guidance as arrows in a plane, from the UNet's real noise predictions.

    The predictions are long vectors (every number of the latents); the guided prediction
    ``ε = ε_base + s·(ε_text − ε_base)`` lies in the plane spanned by ``ε_base`` and the text direction
    ``d = ε_text − ε_base``. The diagram projects onto that plane (an orthonormal basis by Gram–Schmidt: ``e1``
    along ``ε_base``, ``e2`` along the part of ``d`` orthogonal to it), so lengths and angles are the real ones.
    Left: to scale, with the step ``s·d``; right: magnified around the tips, where ``d`` shows (and ``s·d``, for
    ``|s| <= 3``). The text under the plot prints the real norms. ``ε_base`` is ``eps_uncond``, or
    ``eps_negative`` when given: diffusers puts the negative prompt's embedding where the empty prompt's was, so
    its prediction replaces ``ε_uncond`` (drawn dashed, projected, for comparison).

    Args:
        eps_uncond (`torch.Tensor`): the UNet's prediction for the empty prompt, any shape, e.g. ``[1, 4, h, w]``.
        eps_text (`torch.Tensor`): its prediction for the prompt, same shape.
        guidance_scale (`float`): s.
        eps_negative (`torch.Tensor`, *optional*): its prediction for the negative prompt, same shape.

    Returns:
        `matplotlib.figure.Figure`: the diagram; its text prints ``|ε_base|``, ``|d|`` and ``s·|d|``.
    """
    tensors = [eps_uncond, eps_text] + ([] if eps_negative is None else [eps_negative])
    shapes = {tuple(torch.as_tensor(e).shape) for e in tensors}
    if len(shapes) != 1:
        raise ValueError(f"the noise predictions must have one shape, not {sorted(shapes)}")
    if not isinstance(guidance_scale, numbers.Real) or not abs(guidance_scale) < float("inf"):
        raise ValueError(f"guidance_scale must be a finite number, not {guidance_scale!r}")
    uncond, text, *negative = [torch.as_tensor(e).detach().flatten().double().cpu() for e in tensors]
    base = negative[0] if negative else uncond
    b_norm = base.norm().item()
    if b_norm == 0:
        raise ValueError("the base prediction is all zeros: it spans no direction to draw")
    e1 = base / b_norm
    d = text - base
    along = (d @ e1).item()
    perp = d - along * e1
    e2 = perp / perp.norm() if perp.norm() > 1e-12 * b_norm else torch.zeros_like(perp)
    s, d_norm = float(guidance_scale), d.norm().item()
    guided = base + s * d
    b_name = "ε_neg" if negative else "ε_uncond"
    points = {b_name: (b_norm, 0.0), "ε_text": ((text @ e1).item(), (text @ e2).item())}
    points["ε (guided)"] = ((guided @ e1).item(), (guided @ e2).item())
    colors = {b_name: COLORS["negative" if negative else "uncond"], "ε_text": COLORS["text"]}
    colors["ε (guided)"] = COLORS["guided"]
    if negative:
        points["ε_uncond (replaced)"] = ((uncond @ e1).item(), (uncond @ e2).item())
        colors["ε_uncond (replaced)"] = COLORS["uncond"]
    fig, (full, zoom) = plt.subplots(1, 2, figsize=(10, 4.9))

    def arrow(ax, start, end, color, style="-", lw=1.6):
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=12, color=color, lw=lw, ls=style))

    for ax in (full, zoom):
        for name, tip in points.items():
            arrow(ax, (0, 0), tip, colors[name], "--" if "replaced" in name else "-")
        arrow(ax, points[b_name], points["ε (guided)"], COLORS["step"], lw=1.4)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    arrow(zoom, points[b_name], points["ε_text"], "#222222", lw=1.4)

    def square(ax, tips, pad):  # equal scales on both axes, every tip inside
        xs, ys = [p[0] for p in tips], [p[1] for p in tips]
        half = max(max(xs) - min(xs), max(ys) - min(ys), 1e-9 * b_norm) * (0.5 + pad)
        cx, cy = (max(xs) + min(xs)) / 2, (max(ys) + min(ys)) / 2
        ax.set(xlim=(cx - half, cx + half), ylim=(cy - half, cy + half), aspect="equal")
        return 2 * half

    side = square(full, [(0, 0), *points.values()], 0.12)
    full.plot([0], [0], "ko", ms=3)
    full.set_title("to scale (the dot: the origin, no noise predicted)", fontsize=9)
    handles = [plt.Line2D([], [], color=c, lw=2, ls="--" if "replaced" in n else "-") for n, c in colors.items()]
    handles.append(plt.Line2D([], [], color=COLORS["step"], lw=2))
    full.legend(handles, [*colors, f"s·d = {s:g}·(ε_text − {b_name})"], fontsize=8, loc="upper left")
    near = [tip for name, tip in points.items() if name != "ε (guided)" or abs(s) <= 3]
    zoom_side = square(zoom, near, 0.45)
    zoom.set_title(f"around the tips, magnified ×{side / zoom_side:.0f}: the text direction d", fontsize=9)
    for name, (x, y) in points.items():
        offset = (6, -14) if name == b_name else (6, 4)
        zoom.annotate(name, (x, y), xytext=offset, textcoords="offset points", fontsize=9, color=colors[name])
    (x0, y0), (x1, y1) = points[b_name], points["ε_text"]
    zoom.annotate(
        f"d = ε_text − {b_name}",
        ((x0 + x1) / 2, (y0 + y1) / 2),
        xytext=(8, -4),
        textcoords="offset points",
        fontsize=8.5,
    )
    if abs(s) > 3:
        zoom.text(
            0.98,
            0.97,
            f"s·d goes on, out of view,\nto ε (guided): {s:g} times d",
            transform=zoom.transAxes,
            ha="right",
            va="top",
            fontsize=8.5,
            color=COLORS["step"],
        )
    formula = f"ε = {b_name} + s·(ε_text − {b_name}),  s = {s:g}"
    fig.suptitle(f"Classifier-free guidance: {formula}", fontsize=10)
    numel = uncond.numel()
    note = (
        f"|{b_name}| = {b_norm:.3g},  |d| = |ε_text − {b_name}| = {d_norm:.3g} = {d_norm / b_norm:.1%} of |{b_name}|"
        f"{': the text changes the prediction a little' if d_norm < 0.5 * b_norm else ''};  "
        f"s·|d| = {s * d_norm:.3g} = {s * d_norm / b_norm:.1%},  "
        f"|ε| = {guided.norm().item():.3g}.\nProjected from {numel:,} numbers ({list(torch.as_tensor(eps_text).shape)}) "
        f"onto the plane of {b_name} and d (Gram–Schmidt); these arrows lie in it exactly."
    )
    if negative:
        rest = (uncond - (uncond @ e1) * e1 - (uncond @ e2) * e2).norm().item()
        note += f" ε_uncond is {rest / uncond.norm().item():.1%} out of it."
    fig.text(0.5, 0.02, note, ha="center", va="bottom", fontsize=8.5)
    fig.tight_layout(rect=(0, 0.11, 1, 0.95))
    plt.close(fig)
    return fig


def strength_diagram(scheduler, num_inference_steps: int, strength: float) -> plt.Figure:
    """img2img's ``strength`` as a timeline: the full schedule, the skipped start, the timesteps that run.

    As diffusers' ``StableDiffusionImg2ImgPipeline.get_timesteps``: ``init = min(int(n·strength), n)``,
    ``t_start = max(n − init, 0)``, the run is ``timesteps[t_start·order:]``, and the image's latents are noised up
    to its first timestep (what ``course_utils.img2img.start_timesteps`` returns).

    Args:
        scheduler (`SchedulerMixin`): the pipeline's scheduler; a copy gets ``set_timesteps``, it is not changed.
        num_inference_steps (`int`): n, the steps a full (strength 1) run would take.
        strength (`float`): in [0, 1].

    Returns:
        `matplotlib.figure.Figure`: the diagram.
    """
    if isinstance(strength, bool) or not isinstance(strength, numbers.Real) or not 0 <= strength <= 1:
        raise ValueError(f"strength must be a number in [0, 1] (the share of the steps img2img runs), not {strength!r}")
    n = num_inference_steps
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"num_inference_steps must be an integer of at least 1, not {n!r}")
    schedule = copy.deepcopy(scheduler)
    schedule.set_timesteps(n)
    full = [float(t) for t in schedule.timesteps]
    init = min(int(n * strength), n)
    t_start = max(n - init, 0)
    begin = t_start * schedule.order
    run = full[begin:]
    fig, ax = plt.subplots(figsize=(10, 3.4))
    ax.set(xlim=(-0.8, len(full) - 0.2), ylim=(-1.6, 1.5))
    ax.axis("off")
    ax.plot(range(len(full)), [0] * len(full), "-", color="#999999", lw=1, zorder=1)
    ax.scatter(range(begin), [0] * begin, s=30, color="#bbbbbb", zorder=2)
    ax.scatter(range(begin, len(full)), [0] * len(run), s=40, color=COLORS["guided"], zorder=2)
    under = dict(ha="center", va="top", fontsize=8.5)
    if begin:
        ax.add_patch(Rectangle((-0.5, -1.05), begin, 2.2, color="#dddddd", alpha=0.6, lw=0))
        ax.text((begin - 1) / 2, -0.75, f"skipped: {begin} of {len(full)}", color="#555555", **under)
    if run:
        ax.text((begin + len(full) - 1) / 2, -0.75, f"run: {len(run)} of {len(full)}", color=COLORS["guided"], **under)
    every = max(1, -(-len(full) // 20))  # at most about 20 labels
    special = {0, begin, len(full) - 1}
    for i, t in enumerate(full):
        crowded = any(0 < abs(i - k) < every for k in special)
        if i in special or (i % every == 0 and not crowded):
            ax.text(i, -0.15, _t(t), ha="center", va="top", fontsize=8, rotation=90 if len(full) > 12 else 0)
    if run:
        ax.annotate(
            f"noise added up to t = {_t(run[0])}: the first step run",
            (begin, 0.05),
            xytext=(begin, 0.95),
            ha="left" if begin < len(full) / 2 else "right",
            fontsize=9,
            arrowprops=dict(arrowstyle="-|>", color="#333333"),
        )
    else:
        ax.text(len(full) / 2, 0.9, "no step runs: diffusers refuses (fewer than 1 step)", ha="center", fontsize=9)
    ax.text(len(full) - 0.5, -1.55, "t large (noise) → t small (image)", ha="right", fontsize=8, color="#555555")
    formula = (
        f"init = min(int({n} × {strength:g}), {n}) = {init},  t_start = max({n} − {init}, 0) = {t_start},  "
        f"run = timesteps[{t_start} × order {schedule.order}:]"
    )
    if len(full) != n * schedule.order:
        formula += f"\n({type(schedule).__name__} lists {len(full)} timesteps for {n} steps)"
    ax.text(-0.7, -1.55, formula, fontsize=8.5, va="bottom")
    fig.suptitle(f"img2img, strength = {strength:g}: steps run: {len(run)} of {len(full)}", fontsize=10)
    fig.tight_layout()
    plt.close(fig)
    return fig
