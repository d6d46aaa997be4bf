import base64
import io
import re

import numpy as np
import pytest
import torch
from PIL import Image

import course_utils as cu
from course_utils import visual


def test_recorder_captures_every_step(tiny_pipe):
    rec = cu.LatentRecorder(every=2)
    settings = dict(cu.default_settings("tiny"), num_inference_steps=5, output_type="latent")
    out = tiny_pipe("a cat", generator=torch.Generator().manual_seed(0), callback_on_step_end=rec, **settings)
    # PNDM repeats its first timestep, so 5 steps call the UNet 6 times.
    assert tiny_pipe.num_timesteps == 6
    assert rec.steps == [0, 2, 4, 5]
    assert rec.latents[-1].shape == (1, 4, 16, 16)  # tiny: 64x64 pixels, 4x VAE
    assert torch.equal(rec.latents[-1], out.images)


def test_decode_and_pictures(tiny_pipe):
    latents = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    images = cu.decode_latents(tiny_pipe.vae, latents)
    assert len(images) == 2 and images[0].size == (64, 64)
    picture = cu.latent_to_image(latents[:1], tile=16)
    assert picture.size == (64, 16)
    assert cu.grid(images + [picture], cols=2, size=32).size == (64, 64)
    slider = cu.step_slider(images, ["a", "b"])
    bar, caption, view = slider.children
    assert (bar.min, bar.max, bar.value, caption.value) == (1, 2, 2, "b")  # counts from 1, like "step 2/2"
    bar.value = 1
    assert caption.value == "a" and view.value != cu.step_slider(images).children[2].value


def _frames(n, size=(64, 16)):
    return [Image.new("RGB", size, (10 * i, 0, 0)) for i in range(n)]


def test_slider_displays_itself_then_a_still_copy(monkeypatch):
    """Displayed, the slider is one output (tagged: the HTML export leaves it out) and its still copy the next."""
    shown = []
    monkeypatch.setattr(
        "IPython.display.display", lambda data, raw=False, metadata=None: shown.append((data, metadata))
    )
    slider = cu.step_slider(_frames(3), ["step 1/3", "step 2/3", "step 3/3"])
    slider._ipython_display_()
    (live, live_meta), (still, still_meta) = shown
    assert live["application/vnd.jupyter.widget-view+json"]["model_id"] == slider.model_id
    assert live_meta == {"tags": [visual.LIVE_ONLY_TAG]}  # the tag the HTML export leaves out (cli)
    assert "VBox(" not in live["text/plain"] and "3 frames" in live["text/plain"]  # what a viewer without widgets shows
    assert still_meta is None and "course-still" in still["text/html"] and "still copy" in still["text/plain"]


def test_still_player_is_self_contained():
    """Every frame inline as a data: URI, once; the last one shown first; captions escaped; no URL to fetch."""
    page = visual.still_player(_frames(4), ["a", "b", "c", "x<y"])
    uris = re.findall(r'src="(data:image/png;base64,[^"]+)"', page)
    assert len(uris) == 5 and uris[0] == uris[-1]  # the frame on show (the last) + the 4 under "all frames"
    assert "x&lt;y" in page and "x<y" not in page
    assert "http" not in page and "<script>" in page and "all 4 frames" in page


def test_still_player_caps_frames_and_size():
    """sd15 sizes: at most max_frames frames (first and last kept), shrunk to max_pixels; photos become JPEG."""
    rng = np.random.default_rng(0)
    photos = [Image.fromarray(rng.integers(0, 255, (512, 512, 3), dtype=np.uint8)) for _ in range(3)]
    page = visual.still_player(photos * 17, [f"step {i + 1}/51" for i in range(51)], max_frames=6, max_pixels=256 * 256)
    assert "6 of 51 frames" in page and "step 1/51" in page and "step 51/51" in page and "step 2/51" not in page
    assert page.count("data:image/jpeg") == 7 and "data:image/png" not in page
    jpeg = re.search(r'data:image/jpeg;base64,([^"]+)"', page).group(1)
    assert Image.open(io.BytesIO(base64.b64decode(jpeg))).size == (256, 256)
    assert len(page) < 7 * 60_000


def test_slider_needs_images_and_matching_labels():
    with pytest.raises(ValueError, match="at least one image"):
        cu.step_slider([])
    with pytest.raises(ValueError, match="one label per image"):
        cu.step_slider(_frames(2), ["only one"])


def test_grid_enlarges_small_images_by_a_whole_factor_keeping_their_shape():
    from PIL import Image

    small = [Image.new("RGB", (28, 18), "red"), Image.new("RGB", (28, 18), "blue")]
    out = visual.grid(small, min_width=256)
    assert out.size == (2 * 28 * 9, 18 * 9)  # 256 // 28 = 9: sharp pixels, the aspect ratio kept
    assert visual.grid(small, min_width=16).size == (56, 18)  # already wide enough: as they are
