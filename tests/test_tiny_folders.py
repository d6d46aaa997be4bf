"""data/tiny's folders load the way any diffusers user loads a folder: plain ``from_pretrained`` calls, no arguments.

With no ``dtype`` every model comes out float32 (diffusers casts to torch's default dtype; transformers 5 uses
the ``dtype`` that ``config.json`` declares), holding exactly the stored fp16 values upcast; ``dtype=torch.float16``
gives the stored tensors themselves (not run here: fp16 is for a GPU). No course_utils loader is used.
"""

import pytest
import torch
from diffusers import AutoencoderKL, ControlNetModel, DiffusionPipeline, UNet2DConditionModel
from safetensors.torch import load_file
from transformers import CLIPTextModel, CLIPTokenizer

from course_utils.paths import DATA_DIR

TINY = DATA_DIR / "tiny"
TEXT2IMG = TINY / "text2img"
# model folder -> (class, extra from_pretrained arguments, input channels of its UNet or None)
MODELS = {
    "text2img/unet": (UNet2DConditionModel, {}, 4),
    "text2img/vae": (AutoencoderKL, {}, None),
    "inpaint/unet": (UNet2DConditionModel, {}, 9),
    "upscale/unet": (UNet2DConditionModel, {}, 7),
    "upscale/vae": (AutoencoderKL, {}, None),
    "controlnet": (ControlNetModel, {}, 4),  # reads latents (4 channels) and a 3-channel 64x64 condition
}
BUDGET = 40_000_000  # bytes, data/tiny in all (issue 4)


def _stored(folder):
    (path,) = folder.glob("*.safetensors")  # one weights file per folder: the default name, no variants
    return load_file(path)


def _assert_dtype(module, dtype, name):
    wrong = {k: p.dtype for k, p in module.named_parameters() if p.dtype != dtype}
    assert not wrong, f"{name}: not {dtype}: {dict(list(wrong.items())[:3])}"


def _assert_holds(module, stored, dtype, name):
    """Every stored tensor is in the module, in ``dtype``, with exactly the stored value."""
    state = module.state_dict()
    for key, value in stored.items():
        assert key in state, (name, key)
        assert state[key].dtype == dtype and torch.equal(state[key], value.to(dtype)), (name, key)


@pytest.fixture(scope="module")
def pipe():
    pipe = DiffusionPipeline.from_pretrained(TEXT2IMG)  # exactly what a new user types
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_data_tiny_fits_the_budget():
    total = sum(f.stat().st_size for f in TINY.rglob("*") if f.is_file())
    assert total <= BUDGET, f"data/tiny is {total / 1e6:.2f} MB (budget {BUDGET / 1e6:.0f} MB)"


def test_text2img_pipeline_loads_as_float32_and_runs(pipe):
    for name in ("text_encoder", "unet", "vae"):
        module = getattr(pipe, name)
        _assert_dtype(module, torch.float32, name)
        _assert_holds(module, _stored(TEXT2IMG / name), torch.float32, name)
    generator = torch.Generator("cpu").manual_seed(0)
    images = pipe(
        "a red circle on a blue background",
        num_inference_steps=2,
        height=64,
        width=64,
        generator=generator,
        output_type="np",
    ).images
    assert images.shape == (1, 64, 64, 3) and images.dtype.kind == "f"


def test_text2img_pipeline_loads_in_float16():
    half = DiffusionPipeline.from_pretrained(TEXT2IMG, dtype=torch.float16)
    for name in ("text_encoder", "unet", "vae"):
        module = getattr(half, name)
        _assert_dtype(module, torch.float16, name)
        _assert_holds(module, _stored(TEXT2IMG / name), torch.float16, name)


@pytest.mark.parametrize("dtype", [None, torch.float16])
def test_text_encoder_alone(dtype):
    kw = {} if dtype is None else dict(dtype=dtype)
    encoder = CLIPTextModel.from_pretrained(TEXT2IMG, subfolder="text_encoder", **kw)
    expected = dtype or torch.float32
    _assert_dtype(encoder, expected, "text_encoder")
    _assert_holds(encoder, _stored(TEXT2IMG / "text_encoder"), expected, "text_encoder")
    if dtype is None:
        tokenizer = CLIPTokenizer.from_pretrained(TEXT2IMG, subfolder="tokenizer")
        ids = tokenizer("a red circle", return_tensors="pt").input_ids  # <start> a red circle <end>
        hidden = encoder(ids).last_hidden_state
        assert hidden.shape == (1, 5, encoder.config.hidden_size) and hidden.dtype == torch.float32


@pytest.mark.parametrize("part", sorted(MODELS))
def test_model_folder_loads_as_float32_and_runs(part):
    cls, kw, channels = MODELS[part]
    model = cls.from_pretrained(TINY / part, **kw)
    _assert_dtype(model, torch.float32, part)
    _assert_holds(model, _stored(TINY / part), torch.float32, part)
    torch.manual_seed(0)
    with torch.no_grad():
        if channels is None:  # a VAE: encode and decode a 64x64 image
            out = model(torch.rand(1, 3, 64, 64) * 2 - 1).sample
            assert out.shape == (1, 3, 64, 64)
        else:
            assert model.config.in_channels == channels
            extra = {}
            if model.config.num_class_embeds:  # the x4 upscaler: its noise_level is a class label
                extra["class_labels"] = torch.tensor([20])
            text = torch.randn(1, 77, model.config.cross_attention_dim)
            if isinstance(model, ControlNetModel):  # its residuals: the last one is the middle block's
                down, mid = model(
                    torch.randn(1, 4, 16, 16), 500, text, controlnet_cond=torch.rand(1, 3, 64, 64), return_dict=False
                )
                out = mid
                assert out.shape[-2:] == (4, 4) and all(torch.isfinite(r).all() for r in down)
            else:
                out = model(torch.randn(1, channels, 16, 16), 500, encoder_hidden_states=text, **extra).sample
                assert out.shape == (1, model.config.out_channels, 16, 16)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


@pytest.mark.parametrize("part", sorted(MODELS))
def test_model_folder_loads_in_float16(part):
    cls, kw, _ = MODELS[part]
    model = cls.from_pretrained(TINY / part, dtype=torch.float16, **kw)
    _assert_dtype(model, torch.float16, part)
    _assert_holds(model, _stored(TINY / part), torch.float16, part)


def test_outline_lora_loads_into_the_plain_pipeline_and_runs(pipe):
    pipe.load_lora_weights(TINY / "outline_lora")
    try:
        lora = {k: p for k, p in pipe.unet.named_parameters() if "lora_" in k}
        assert lora and all(p.dtype == torch.float32 for p in lora.values())
        images = pipe("a red circle", num_inference_steps=2, height=64, width=64, output_type="np").images
        assert images.shape == (1, 64, 64, 3)
    finally:
        pipe.unload_lora_weights()
