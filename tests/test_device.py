import pytest
import torch

import course_utils as cu
from course_utils import device
from course_utils.models import builders


@pytest.mark.parametrize(
    "cuda, mps, expected",
    [(True, True, "cuda"), (True, False, "cuda"), (False, True, "mps"), (False, False, "cpu")],
)
def test_default_device_prefers_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, expected):
    """The rule, with the hardware faked: a GPU wins, then Apple's MPS, then the CPU."""
    monkeypatch.delenv("COURSE_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(device, "_mps_available", lambda: mps)
    assert cu.get_device() == expected


def test_course_device_overrides(monkeypatch):
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    assert cu.get_device() == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_forced_cuda_without_gpu_says_what_to_do(monkeypatch):
    monkeypatch.setenv("COURSE_DEVICE", "cuda")
    with pytest.raises(cu.CourseError, match="Change runtime type") as info:
        cu.get_device()
    assert "Found no NVIDIA driver" in str(info.value)


def test_unknown_device(monkeypatch):
    monkeypatch.setenv("COURSE_DEVICE", "tpu")
    with pytest.raises(cu.CourseError, match="not one of"):
        cu.get_device()


def test_dtype_per_device():
    assert cu.get_dtype("cuda") == torch.float16
    assert cu.get_dtype("cpu") == torch.float32
    assert cu.get_dtype("mps") == torch.float32
    with pytest.raises(cu.CourseError):
        cu.get_dtype("gpu")


@pytest.mark.parametrize(
    "value, expected",
    [
        ("float16", torch.float16),
        ("fp16", torch.float16),
        ("bfloat16", torch.bfloat16),
        ("BF16", torch.bfloat16),
        ("float32", torch.float32),
        ("torch.float16", torch.float16),
    ],
)
def test_course_dtype_overrides_on_every_device(monkeypatch, value, expected):
    monkeypatch.setenv("COURSE_DTYPE", value)
    for name in cu.DEVICES:
        assert cu.get_dtype(name) == expected
    assert device.dtype_reason("cpu").startswith("COURSE_DTYPE=")


def test_unknown_course_dtype_says_what_to_do(monkeypatch):
    monkeypatch.setenv("COURSE_DTYPE", "float8")
    with pytest.raises(cu.CourseError, match="not one of .*float16.*Unset it"):
        cu.get_dtype("cpu")


def test_setup_prints_the_dtype_and_why(monkeypatch, capsys):
    monkeypatch.setenv("COURSE_DTYPE", "float16")
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    choice = cu.setup()
    line = capsys.readouterr().out
    assert choice.dtype == torch.float16 and "dtype=float16" in line and "COURSE_DTYPE=float16" in line
    monkeypatch.delenv("COURSE_DTYPE")
    assert "float32 on cpu" in str(cu.choose(profile="tiny", device="cpu"))


def test_fast_layout_only_for_float16_on_a_cpu():
    pipe = builders.tiny_text2img()
    channels_last = lambda: pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)  # noqa: E731
    device.fast_layout(pipe, "cpu", torch.float32)
    assert not channels_last()
    device.fast_layout(pipe, "cuda", torch.float16)
    assert not channels_last()
    device.fast_layout(pipe, "cpu", torch.float16)
    assert channels_last() and pipe.vae.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    from types import SimpleNamespace

    from diffusers import ControlNetModel

    with_controlnet = SimpleNamespace(controlnet=ControlNetModel.from_unet(pipe.unet))  # a ControlNet pipeline's third
    device.fast_layout(with_controlnet, "cpu", torch.float16)
    assert with_controlnet.controlnet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)


def test_attention_slicing_on_mps_below_64_gb(capsys):
    """diffusers' MPS guide: attention slicing on Apple silicon with under 64 GB of memory; nothing changes elsewhere."""
    from diffusers.models.attention_processor import SlicedAttnProcessor

    from course_utils.device import mps_attention_slicing

    def sliced(pipe):
        return {type(p) for p in pipe.unet.attn_processors.values()} == {SlicedAttnProcessor}

    pipe = cu.load_pipeline("text2img", profile="tiny", device="cpu")
    assert not sliced(mps_attention_slicing(pipe, "cpu", ram=8 * 2**30))
    assert not sliced(mps_attention_slicing(pipe, "mps", ram=128 * 2**30))  # plenty of memory: the faster path
    assert capsys.readouterr().out.count("attention slicing") == 0
    assert sliced(mps_attention_slicing(pipe, "mps", ram=16 * 2**30))
    assert "mps with 16 GiB of memory (< 64 GB): attention slicing on" in capsys.readouterr().out


def test_cast_only_where_the_dtype_differs():
    """device.cast: a cast to the dtype a model already has changes nothing (no copy, no diffusers note)."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(block_out_channels=(8,), norm_num_groups=8, latent_channels=4)
    weight = vae.encoder.conv_in.weight
    assert (
        cu.cast(vae, torch.float32) is vae and vae.encoder.conv_in.weight is weight
    )  # the same tensor: nothing copied
    assert cu.cast(vae, torch.bfloat16, "cpu").dtype == torch.bfloat16
    assert cu.cast(torch.nn.Linear(2, 2), torch.float16).weight.dtype == torch.float16  # a plain module too
