"""The trained `tiny` models still do what the lessons say: a small sample of ``course_utils.evaluate``.

The full evaluation (20 seeds per prompt; ``python -m course_utils evaluate``) is in
``data/tiny/README.md``. Here a few seeds per prompt keep the run short. The thresholds are
regression guards for the committed weights: below the scores measured on this sample (margin for
another CPU's rounding) and above what random weights reach (colour ~1/6, colour-and-shape ~1/18,
noise instead of an upscaled picture), so swapped or broken weights fail. Most are looser than
issue 4's targets; the inpainting and upscaling checks use the targets' own bounds, and the
negative-prompt target (0.9) is missed by these weights (0.83; see the model card).

Measured on this sample (2-core CPU, 2026-11-27, the 13,000-step model, guidance 3): seen colour
1.0, shape 1.0, background 1.0; held-out colour-and-shape 0.97; negative 0.89 (colour 1.0, shape
0.78); inpainting new colour 1.0, outside/inside 0.056; upscaler 30.0 dB (bicubic 26.9).
"""

import pytest
import torch

import course_utils as cu
from course_utils import upscale, world
from course_utils.commands import evaluate

pytestmark = pytest.mark.slow  # about a minute: dozens of 25-step images

SEEDS = [0, 1, 2, 3]
SETTINGS = cu.default_settings("tiny")


@pytest.fixture(scope="module")
def text2img_scores(tiny_pipe):
    return evaluate.text2img_scores(tiny_pipe, SEEDS, **SETTINGS)


def test_defaults_are_the_model_cards():
    assert SETTINGS == dict(height=64, width=64, num_inference_steps=25, guidance_scale=3.0)


def test_draws_the_colour_and_shape_asked_for(text2img_scores):
    s = text2img_scores
    print(s)
    assert s["seen_color"] >= 0.9 and s["seen_shape"] >= 0.9, s
    assert s["seen_background"] >= 0.8, s  # the background the prompt names, not the one the seed's noise suggests


def test_generalises_to_held_out_combinations(text2img_scores):
    assert text2img_scores["held_out_color_and_shape"] >= 0.85, text2img_scores


def test_negative_prompt_removes_what_it_names(tiny_pipe):
    s = evaluate.negative_scores(tiny_pipe, SEEDS[:3], **SETTINGS)
    print(s)
    assert s["negative_removes_color"] >= 0.9, s
    assert s["negative_removes_shape"] >= 0.5, (
        s
    )  # a bare shape word ("circle") removes that shape in 2 of 3 images (model card)


def test_lesson_prompt_is_drawn(tiny_pipe):
    """Lesson 1's first image on `tiny` (seed 0) is what its prompt asks for: a red circle on blue."""
    prompt = cu.prompt("main", "tiny")
    image = tiny_pipe(prompt, generator=torch.Generator().manual_seed(0), **SETTINGS).images[0]
    got = world.classify(image)
    assert (got["color"], got["shape"], got["background"]) == ("red", "circle", "blue"), (prompt, got)


def test_inpainting_paints_the_asked_colour_into_the_mask():
    pipe = cu.load_pipeline("inpaint", profile="tiny", device="cpu")
    s = evaluate.inpaint_scores(pipe, 4, **SETTINGS)
    print(s)
    assert s["inpaint_new_color"] >= 0.9 and s["inpaint_change_inside"] > 0.1, s
    assert s["inpaint_outside_over_inside"] <= 0.1, s  # issue 4's target; 0.091 on the full evaluation (model card)


def test_upscaler_output_resembles_the_original():
    pipe = cu.load_pipeline("upscale", profile="tiny", device="cpu")
    s = evaluate.upscale_scores(pipe, 4, **upscale.SCORE_SETTINGS)
    print(s)
    assert s["upscale_psnr_db"] >= 28.0, s
    assert s["upscale_gain_over_bicubic_db"] >= 2.0, s  # issue 4's target; +2.3 dB on the full evaluation (model card)
