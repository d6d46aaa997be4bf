import pytest
import torch

import course_utils as cu
from course_utils import device


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
