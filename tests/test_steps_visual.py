import torch

import course_utils as cu


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
