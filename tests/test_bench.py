"""Lesson 9's measurements (course_utils.measuring, full_size, levers) and the `bench` command: honest timing and
memory, FLOP counts."""

import json
import subprocess
import sys

import pytest
import torch

from course_utils import full_size, measuring
from course_utils.commands import bench
from course_utils.errors import CourseError


def test_measure_keeps_the_median_after_warm_up():
    calls = []
    row = measuring.measure(lambda: calls.append(1), "cpu", "speed", "noop", repeats=5, warmup=2, note="n")
    assert len(calls) == 7 and row.repeats == 5 and len(row.times) == 5
    assert row.seconds == sorted(row.times)[2] and row.group == "speed" and row.note == "n"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak resident memory is read from /proc")
def test_cpu_peak_memory_sees_a_temporary_allocation():
    """The peak window is reset per measurement and catches a 256 MiB tensor freed before it ends."""
    small = measuring.measure(lambda: torch.ones(1), "cpu", "memory", "small", repeats=1, warmup=0)
    big = measuring.measure(lambda: torch.ones(64, 2**20).sum(), "cpu", "memory", "big", repeats=1, warmup=0)
    assert big.added_gib >= 0.2, big
    assert big.peak_gib > small.peak_gib


def test_estimates_add_up_the_parts():
    parts = {
        "text encoder, 1 prompt": 0.5,
        "UNet step, batch 1 (no guidance)": 2.0,
        "UNet step, batch 2 (guidance)": 3.0,
        "VAE decode": 10.0,
        "tiny autoencoder decode": 1.0,
    }
    est = full_size.estimates(parts)
    assert est["out of the box (PNDM 50 steps, guidance)"] == pytest.approx(2 * 0.5 + 51 * 3.0 + 10.0)
    assert est["recommended (DPM-Solver++ 20 steps, guidance)"] == pytest.approx(1.0 + 20 * 3.0 + 10.0)
    assert est["laptop (LCM 4 steps, no guidance, tiny autoencoder)"] == pytest.approx(0.5 + 4 * 2.0 + 1.0)
    del parts["UNet step, batch 2 (guidance)"]  # not measured: twice the batch-1 step
    assert full_size.estimates(parts)["recommended (DPM-Solver++ 20 steps, guidance)"] == pytest.approx(
        1.0 + 20 * 4.0 + 10.0
    )


@pytest.mark.slow
def test_flops_are_counted_without_running_anything():
    """SD 1.5's UNet: about 0.8 TFLOP per 512x512 step; attention makes 256x256 more than 4x cheaper."""
    large, small = full_size.unet_flops(512), full_size.unet_flops(256)
    assert 7.5e11 < large < 8.5e11, large
    assert large / small > 4
    parts = full_size.part_flops(512)
    assert parts["UNet step, batch 1 (no guidance)"] == large
    assert parts["UNet step, batch 2 (guidance)"] == 2 * large
    assert parts["VAE decode"] > 10 * parts["tiny autoencoder decode"]  # what makes the tiny autoencoder the lever


@pytest.mark.slow
def test_quick_full_size_parts_scale_the_decodes_to_512():
    """Quick run: the UNet at 512x512 for real, the decodes at 128x128 scaled by their counted FLOPs (the note says so)."""
    rows, seconds = full_size.full_size_parts("cpu", repeats=1, warmup=0, guidance_batch=False, decode_size=128)
    by_name = {r.name: r for r in rows}
    assert "matmul peak" in by_name and "UNet step, batch 2 (guidance)" not in by_name
    unet, decode = by_name["UNet step, batch 1 (no guidance)"], by_name["VAE decode"]
    assert "512x512" in unet.note and "of matmul peak" in unet.note and "scaled" not in unet.note
    assert "128x128" in decode.note and "scaled by FLOPs" in decode.note
    assert seconds["UNet step, batch 1 (no guidance)"] == unet.seconds and seconds["VAE decode"] > 10 * decode.seconds
    assert set(full_size.estimates(seconds)) == {
        "out of the box (PNDM 50 steps, guidance)",
        "recommended (DPM-Solver++ 20 steps, guidance)",
        "laptop (LCM 4 steps, no guidance, tiny autoencoder)",
    }


@pytest.mark.slow
def test_every_full_size_part_runs_in_float16():
    """What lesson 9's full-size cell runs on a GPU (float16), here at 64x64 (the float16 lane leaves that cell out):
    every part's output in float16 and finite."""
    models = full_size.full_size_models("cpu", torch.float16)
    with torch.inference_mode():
        for name, call in full_size._part_calls(models, "cpu", torch.float16, 64).items():
            out = call()
            out = out.last_hidden_state if hasattr(out, "last_hidden_state") else out.sample
            assert out.dtype == torch.float16 and torch.isfinite(out).all(), name


def test_timing_models_are_filled_not_empty():
    """full_size_models fills weights from a random block: finite, varied outputs (an all-zero net would time the same but lie)."""
    models = full_size.full_size_models("cpu", only=("text_encoder", "taesd"))  # the UNet and VAE stay shapes (meta)
    assert models["unet"].device.type == "meta"
    calls = full_size._part_calls(models, "cpu", torch.float32, 64)
    with torch.inference_mode():
        for name in ("text encoder, 1 prompt", "tiny autoencoder decode"):
            out = calls[name]()
            out = out.last_hidden_state if hasattr(out, "last_hidden_state") else out.sample
            assert torch.isfinite(out).all() and out.std() > 0.1, name


def test_not_measured_says_why():
    row = measuring.not_measured("memory", "model CPU offload", "needs a GPU")
    assert row.seconds is None and row.note == "not measured: needs a GPU"
    assert "not measured: needs a GPU" in bench.table(dict(rows=[vars(row)], estimates={}))


def test_unknown_part_and_bad_repeats_are_clear_errors():
    with pytest.raises(CourseError, match="Unknown parts"):
        bench.run("tiny", parts=("speed", "typo"))
    with pytest.raises(CourseError, match="--repeats must be 1 or more"):
        bench.main(["--repeats", "0"])


@pytest.mark.slow
def test_speed_and_memory_rows_on_tiny(tmp_path):
    """The command on tiny: every row measured, the recommended settings take fewer steps and still draw what was asked.
    (How much faster they are is a timing: printed, not asserted; a busy machine must not fail the test.)"""
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "course_utils",
            "bench",
            "--profile",
            "tiny",
            "--parts",
            "speed,memory",
            "--repeats",
            "1",
            "--json",
            str(out),
            "--markdown",
            str(tmp_path / "bench.md"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    rows = {r["name"]: r for r in result["rows"]}
    assert result["profile"] == "tiny" and result["machine"]["device"].startswith("cpu")
    oob, rec = rows["out of the box"], rows["recommended"]
    assert "50 steps" in oob["note"] and "20 steps" in rec["note"], (oob, rec)  # 51 PNDM steps vs 20 DPM-Solver++ steps
    print(f"recommended vs out of the box: {oob['seconds'] / rec['seconds']:.1f}x faster here")
    assert rec["score"] >= 0.75 and oob["score"] is not None
    for name in ("attention slicing", "batch of 4 + VAE slicing", "decode 128x128 + VAE tiling", "channels-last UNet"):
        assert rows[name]["seconds"] > 0, name
    assert rows["model CPU offload"]["note"].startswith("not measured: needs a GPU")
    assert "Recommended settings:" in (tmp_path / "bench.md").read_text()
