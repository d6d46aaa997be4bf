"""The diagrams read their numbers from the models and refuse to contradict them."""

import copy

import matplotlib
import matplotlib.pyplot as plt
import matplotlib.text
import pytest
import torch
from diffusers import DDIMScheduler, UNet2DConditionModel
from peft import LoraConfig

from course_utils import by_hand, diagrams, diagrams_steps, img2img
from course_utils.models import builders, configs
from course_utils.models.profiles import prompt

matplotlib.use("Agg")


def texts(fig):
    return " ".join(t.get_text() for t in fig.axes[0].texts)


def test_pipeline_diagram_shows_the_pipelines_shapes():
    pipe = builders.tiny_text2img()
    fig = diagrams.pipeline_diagram(pipe)
    side = pipe.unet.config.sample_size * 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    label = texts(fig)
    assert f"[1, {pipe.tokenizer.model_max_length}, {pipe.text_encoder.config.hidden_size}]" in label
    assert f"[1, 4, {pipe.unet.config.sample_size}, {pipe.unet.config.sample_size}]" in label
    assert f"[1, 3, {side}, {side}]" in label


def test_pipeline_diagram_without_a_pipeline_is_sd15():
    label = texts(diagrams.pipeline_diagram())
    assert "[1, 77, 768]" in label and "[1, 4, 64, 64]" in label and "0.18215" in label


@pytest.mark.parametrize("kind, total", [("text2img", 4), ("upscale", 7), ("inpaint", 9)])
def test_channel_counts(kind, total):
    fig = diagrams.input_channels_diagram(kind)
    assert f"{total} channels" in texts(fig)


def test_channels_checked_against_the_unet():
    unet = builders.tiny_text2img().unet
    diagrams.input_channels_diagram("text2img", unet)
    with pytest.raises(ValueError, match="pass the UNet of a pipeline of kind 'inpaint'"):
        diagrams.input_channels_diagram("inpaint", unet)
    with pytest.raises(ValueError, match="kind must be one of"):
        diagrams.input_channels_diagram("controlnet")


# --- the five diagrams of the steps and parts: built from tiny's real objects, their text shows the real numbers ---


def all_texts(fig):
    """Every text of a figure (axes texts, titles, legends, suptitle), joined; the figure is closed."""
    label = " ".join(t.get_text() for t in fig.findobj(matplotlib.text.Text))
    plt.close(fig)
    return label


@pytest.fixture
def scheduler(tiny_pipe):
    """A copy of tiny's scheduler (PNDM), so the session's pipeline is never changed."""
    return copy.deepcopy(tiny_pipe.scheduler)


def noise_predictions(pipe, prompts, t=901):
    """The UNet's real noise predictions for one random x_t and each prompt, ``[1, 4, h, w]`` each."""
    side = pipe.unet.config.sample_size
    x = torch.randn(1, pipe.unet.config.in_channels, side, side, generator=torch.Generator().manual_seed(0))
    c = torch.cat([by_hand.encode_text(pipe.tokenizer, pipe.text_encoder, p) for p in prompts])
    with torch.no_grad():
        return pipe.unet(x.repeat(len(prompts), 1, 1, 1), t, encoder_hidden_states=c).sample.chunk(len(prompts))


def test_loop_diagram_shows_the_real_timesteps_and_shapes(tiny_pipe, scheduler):
    scheduler.set_timesteps(10)
    ts = [int(t) for t in scheduler.timesteps]
    side = tiny_pipe.unet.config.sample_size
    shape = (1, tiny_pipe.unet.config.in_channels, side, side)
    f = tiny_pipe.vae_scale_factor
    label = all_texts(diagrams_steps.loop_diagram(scheduler.timesteps, shape, vae_scale_factor=f))
    assert f"each of the {len(ts)} timesteps, t = {ts[0]}, {ts[1]}, …, {ts[-1]}" in label
    assert str(list(shape)) in label and f"[1, 3, {side * f}, {side * f}]" in label
    assert "batch of 2" in label and "guidance" in label
    unguided = all_texts(diagrams_steps.loop_diagram(scheduler.timesteps, shape, guidance=False))
    assert "batch of 2" not in unguided and "without guidance" in unguided
    with pytest.raises(ValueError, match="call scheduler.set_timesteps"):
        diagrams_steps.loop_diagram([], shape)
    with pytest.raises(ValueError, match=r"\[batch, channels, h, w\]"):
        diagrams_steps.loop_diagram(scheduler.timesteps, (4, side, side))


def test_guidance_diagram_prints_the_real_norms(tiny_pipe):
    eps_uncond, eps_text, eps_negative = noise_predictions(
        tiny_pipe, ["", prompt("main", "tiny"), prompt("negative", "tiny")]
    )
    s = 7.5
    for base, negative in ((eps_uncond, None), (eps_negative, eps_negative)):
        b, d = base.double().norm().item(), (eps_text - base).double().norm().item()
        guided = (base + s * (eps_text - base)).double().norm().item()
        label = all_texts(diagrams_steps.guidance_diagram(eps_uncond, eps_text, s, eps_negative=negative))
        name = "ε_neg" if negative is not None else "ε_uncond"
        assert f"|{name}| = {b:.3g}" in label and f"= {d:.3g} = {d / b:.1%} of |{name}|" in label, label
        assert f"s·|d| = {s * d:.3g}" in label and f"|ε| = {guided:.3g}" in label
        assert f"{eps_text.numel():,} numbers" in label and f"s = {s:g}" in label
    assert "ε_uncond (replaced)" in label and "out of it" in label  # the negative prompt replaces ε_uncond
    with pytest.raises(ValueError, match="one shape"):
        diagrams_steps.guidance_diagram(eps_uncond, eps_text[:, :2], s)
    with pytest.raises(ValueError, match="finite number"):
        diagrams_steps.guidance_diagram(eps_uncond, eps_text, float("nan"))


def test_unet_diagram_reads_the_config(tiny_pipe):
    with torch.device("meta"):
        sd15 = UNet2DConditionModel.from_config(configs.SD15_UNET)
    for unet in (tiny_pipe.unet, sd15):
        cfg = unet.config
        label = all_texts(diagrams.unet_diagram(unet))
        side, levels = cfg.sample_size, len(cfg.block_out_channels)
        for i, (channels, kind) in enumerate(zip(cfg.block_out_channels, cfg.down_block_types)):
            s = side // 2**i
            assert f"down_blocks[{i}]: {kind}\n{channels} ch · {s}×{s}" in label
            assert (
                f"up_blocks[{levels - 1 - i}]: {cfg.up_block_types[levels - 1 - i]}\n{channels} ch · {s}×{s}" in label
            )
        bands = sum("CrossAttn" in k for k in (*cfg.down_block_types, *cfg.up_block_types, cfg.mid_block_type))
        assert f"({cfg.cross_attention_dim} wide = cross_attention_dim) enters the {bands} blocks" in label
        assert label.count(f"cross-attention ← [.., {cfg.cross_attention_dim}]") == bands
        assert (
            f"skip connections ×{cfg.layers_per_block + 1}" in label
            and f"x_t [{cfg.in_channels}, {side}, {side}]" in label
        )
    assert "up_blocks[0]: UpBlock2D\n1280 ch · 8×8 → 16×16" in label  # SD 1.5, as in the paper's figure
    with pytest.raises(ValueError, match="cannot be halved 2 times"):
        diagrams.unet_diagram(tiny_pipe.unet, latent_size=10)


def test_strength_diagram_agrees_with_img2img(tiny_pipe, scheduler):
    scheduler.set_timesteps(5)
    before = scheduler.timesteps.tolist()
    ddim = DDIMScheduler.from_config(scheduler.config)
    for sched, n, strength in ((scheduler, 10, 0.6), (scheduler, 10, 1.0), (scheduler, 7, 0.3), (ddim, 50, 0.75)):
        label = all_texts(diagrams_steps.strength_diagram(sched, n, strength))
        assert scheduler.timesteps.tolist() == before  # the diagram set the timesteps of a copy
        tail = [int(t) for t in img2img.start_timesteps(copy.deepcopy(sched), n, strength)]  # lesson 04's function
        full = copy.deepcopy(sched)
        full.set_timesteps(n)
        full = [int(t) for t in full.timesteps]
        assert f"steps run: {len(tail)} of {len(full)}" in label and f"noise added up to t = {tail[0]}" in label
        assert f"skipped: {len(full) - len(tail)} of {len(full)}" in label or len(tail) == len(full)
        assert str(full[0]) in label and str(full[-1]) in label
    for bad in (-0.1, 1.5, True, "0.5"):
        with pytest.raises(ValueError, match=r"strength must be a number in \[0, 1\]"):
            diagrams_steps.strength_diagram(scheduler, 10, bad)
    with pytest.raises(ValueError, match="at least 1"):
        diagrams_steps.strength_diagram(scheduler, 0, 0.5)


def test_lora_diagram_counts_the_parameters(tiny_pipe):
    name = next(n for n, _ in tiny_pipe.unet.named_modules() if n.endswith("attn2.to_k"))
    layer = tiny_pipe.unet.get_submodule(name)
    n_in, n_out, r = layer.in_features, layer.out_features, 4
    label = all_texts(diagrams.lora_diagram(layer, r, name=name))
    assert f"W (frozen): {n_out} × {n_in}\n= {n_in * n_out:,} parameters" in label and name in label
    assert f"B: {n_out} × {r}\n= {n_out * r:,}\nstarts at zero" in label and f"A: {r} × {n_in} = {r * n_in:,}" in label
    share = r * (n_in + n_out) / (n_in * n_out)
    assert f"= {r * (n_in + n_out):,} parameters = {share:.1%} of W's" in label
    unet = copy.deepcopy(tiny_pipe.unet)  # as lesson 10 does it: peft wraps the layer, B starts at zero
    unet.add_adapter(LoraConfig(r=8, lora_alpha=8, init_lora_weights="gaussian", target_modules=["to_k"]))
    wrapped = unet.get_submodule(name)
    label = all_texts(diagrams.lora_diagram(wrapped))
    assert "LoRA of rank r = 8" in label and "this layer's B: still zero" in label
    with pytest.raises(ValueError, match="has rank 8"):
        diagrams.lora_diagram(wrapped, 4)
    for bad in (0, None, 2.5, min(n_in, n_out) + 1):
        with pytest.raises(ValueError, match="rank must be an integer from 1"):
            diagrams.lora_diagram(layer, bad)
    with pytest.raises(TypeError, match="torch.nn.Linear"):
        diagrams.lora_diagram(torch.nn.Conv2d(4, 4, 3), 2)
