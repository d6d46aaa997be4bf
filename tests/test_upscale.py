"""The x4 upscaler role: the `tiny` model's architecture, sizes, noise_level checks, no deprecations."""

import warnings

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, StableDiffusionUpscalePipeline
from PIL import Image

import course_utils as cu
from course_utils import upscale
from course_utils.models import builders, configs, surgery
from course_utils.paths import DATA_DIR


@pytest.fixture(scope="module")
def fresh_build(tmp_path_factory):
    """Build the tiny upscaler into an empty cache and run it, recording every warning."""
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mp.setenv("COURSE_CACHE", str(tmp_path_factory.mktemp("cache")))
        pipe = cu.load_pipeline("upscale", profile="tiny", device="cpu")
        low = Image.new("RGB", (32, 32), (200, 120, 40))
        out = pipe(
            "a cat", image=low, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np"
        )
    return pipe, out.images, caught


@pytest.fixture(scope="module")
def pipe(fresh_build):
    return fresh_build[0]


def test_load_pipeline_gives_the_upscaler(pipe):
    assert isinstance(pipe, StableDiffusionUpscalePipeline)
    assert pipe.safety_checker is None and pipe.watermarker is None


def test_tiny_upscaler_has_the_real_architecture(pipe):
    unet_cfg, vae_cfg = pipe.unet.config, pipe.vae.config
    assert unet_cfg.in_channels == 7 and unet_cfg.out_channels == 4  # 4 latents + 3 image channels in, 4 out
    assert unet_cfg.num_class_embeds == 1000 and unet_cfg.class_embed_type is None  # noise_level embedding
    assert tuple(unet_cfg.only_cross_attention) == (True, True, True, False)
    assert unet_cfg.cross_attention_dim == pipe.text_encoder.config.hidden_size
    assert len(vae_cfg.block_out_channels) == 3 and pipe.vae_scale_factor == 4  # 4x, not 8x
    assert vae_cfg.scaling_factor == 0.08333
    assert pipe.vae.dtype == torch.float32
    assert isinstance(pipe.scheduler, DDIMScheduler) and pipe.scheduler.config.prediction_type == "v_prediction"
    assert isinstance(pipe.low_res_scheduler, DDPMScheduler)
    for key, value in configs.X4_UPSCALER_SCHEDULER.items():
        assert pipe.scheduler.config[key] == value, key
    for key, value in configs.X4_UPSCALER_LOW_RES_SCHEDULER.items():
        assert pipe.low_res_scheduler.config[key] == value, key
    assert pipe.config.max_noise_level == 350
    assert pipe.tokenizer.model_max_length == 77
    n_params = sum(p.numel() for m in (pipe.unet, pipe.vae) for p in m.parameters())
    assert 1e6 < n_params < 4e6


def test_upscaler_vae_keeps_images_and_rescales_latents():
    """upscaler_vae folds the text-to-image VAE's scaling_factor into its latent convolutions."""
    text2img = cu.load_pipeline("text2img", profile="tiny", device="cpu")
    vae = text2img.vae
    new = surgery.upscaler_vae(vae)
    assert new.config.scaling_factor == 0.08333 and vae.config.scaling_factor != 0.08333  # the original is untouched
    x = text2img.image_processor.preprocess([cu.world.sample(i).image for i in range(16)])  # [16, 3, 64, 64] in [-1, 1]
    with torch.no_grad():
        a, b = vae.encode(x).latent_dist, new.encode(x).latent_dist
        same = (vae.decode(a.mean).sample - new.decode(b.mean).sample).abs().max().item()
    k = vae.config.scaling_factor / 0.08333
    assert torch.allclose(b.mean, a.mean * k, rtol=1e-4, atol=1e-4) and torch.allclose(b.std, a.std * k, rtol=1e-3)
    assert same < 1e-4
    std = (b.mean * new.config.scaling_factor).std().item()
    assert abs(std - (a.mean * vae.config.scaling_factor).std().item()) < 1e-4 and 0.7 < std < 1.3


def test_tiny_upscaler_vae_is_the_rescaled_text2img_vae(pipe):
    text2img = cu.load_pipeline("text2img", profile="tiny", device="cpu")
    expected = surgery.upscaler_vae(text2img.vae).state_dict()
    for key, value in pipe.vae.state_dict().items():  # stored in fp16: equal to fp16 rounding
        assert torch.allclose(value, expected[key], rtol=2e-3, atol=2e-3), key


def test_32_becomes_128(fresh_build):
    _, images, _ = fresh_build
    assert images.shape == (1, 128, 128, 3)


def test_latent_is_as_big_as_the_input(pipe):
    low = Image.new("RGB", (48, 32), "gray")
    latents = pipe("a cat", image=low, num_inference_steps=1, output_type="latent").images
    assert latents.shape == (1, 4, 32, 48)


def test_no_deprecation_warnings_while_building_and_running(fresh_build):
    _, _, caught = fresh_build
    bad = [w for w in caught if issubclass(w.category, (FutureWarning, DeprecationWarning))]
    assert not bad, [str(w.message) for w in bad]


@pytest.mark.parametrize("level", [351, 1000, -1, 20.5, True, "20"])
def test_bad_noise_level_is_a_course_error(pipe, level):
    with pytest.raises(cu.CourseError) as info:
        upscale.check_noise_level(pipe, level)
    message = str(info.value)
    assert "0" in message and "350" in message and "noise_level" in message and "default is 20" in message


@pytest.mark.parametrize("level", [0, 20, 350])
def test_good_noise_level_passes(pipe, level):
    assert upscale.check_noise_level(pipe, level) == level


def test_model_source_is_the_tiny_folder():
    folder = cu.model_source("upscale", profile="tiny")
    assert folder == str(builders.tiny_upscale_folder())


def test_low_res_input_and_psnr():
    original = cu.load_image(DATA_DIR / "chelsea.png", size=256)
    low = upscale.low_res_input(original)
    assert low.size == (64, 64) and low.mode == "RGB"
    bicubic = low.resize(original.size, Image.Resampling.BICUBIC)
    assert upscale.psnr(original, original) == float("inf")
    assert 15 < upscale.psnr(bicubic, original) < 45
    with pytest.raises(cu.CourseError, match="multiples of 32"):
        upscale.low_res_input(original.resize((100, 100)))
    with pytest.raises(cu.CourseError, match="same size"):
        upscale.psnr(low, original)


def test_fit_for_upscaling_crops_and_never_stretches_or_enlarges():
    photo = cu.load_image(DATA_DIR / "chelsea.png")
    assert photo.size == (451, 300)
    fitted = upscale.fit_for_upscaling(photo, max_side=512)
    assert fitted.size == (448, 288)  # cropped (1 + 2 and 6 + 6 pixels), not resized
    assert fitted.tobytes() == photo.crop((1, 6, 449, 294)).tobytes()
    small = upscale.fit_for_upscaling(photo, max_side=64)  # shrunk to 64x43, aspect ratio kept, then cropped
    assert small.size == (64, 32)
    assert upscale.low_res_input(small).size == (16, 8)
    square = Image.new("RGB", (100, 100), "red")
    assert upscale.fit_for_upscaling(square, max_side=512).size == (96, 96)  # never enlarged to 512
    tiny = cu.load_image(DATA_DIR / "tiny_scene2.png")
    assert upscale.fit_for_upscaling(tiny, max_side=64).tobytes() == tiny.tobytes()
    with pytest.raises(cu.CourseError, match="too small"):
        upscale.fit_for_upscaling(Image.new("RGB", (40, 20)), max_side=512)


def test_sd15_random_has_the_real_sizes():
    """Built on the meta device: the real shapes without allocating ~3.5 GB."""
    with torch.device("meta"):
        big = builders.random_upscale(StableDiffusionUpscalePipeline, torch.float16)
    assert big.unet.config.in_channels == 7 and big.unet.config.block_out_channels == (256, 512, 512, 1024)
    assert big.unet.config.cross_attention_dim == big.text_encoder.config.hidden_size == 1024
    assert 470e6 < sum(p.numel() for p in big.unet.parameters()) < 480e6
    assert big.unet.dtype == torch.float16 and big.vae.dtype == torch.float32  # this VAE overflows in fp16
    assert big.vae.config.scaling_factor == 0.08333 and big.config.max_noise_level == 350
