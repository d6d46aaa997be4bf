"""The diagrams read their numbers from the models and refuse to contradict them."""

import matplotlib
import pytest

from course_utils import diagrams
from course_utils.models import builders

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
