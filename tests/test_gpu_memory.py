"""course_utils.gpu_memory (and its counter and work): peak GPU memory estimated on fake tensors, checked against GPU
measurements."""

import pytest
import torch

from course_utils import gpu_memory, gpu_memory_counter, gpu_memory_work


def test_counter_counts_storages_once_rounds_to_blocks_and_frees():
    with gpu_memory_counter.fake_gpu() as counter:
        a = torch.empty(1000, dtype=torch.float16)  # 2,000 bytes -> 2,048
        view = a[:10]  # a view: no new storage
        assert counter.live == 2048
        b = torch.empty(256, dtype=torch.float32)  # 1,024 bytes exactly
        assert counter.live == 2048 + 1024 and counter.peak == 3072
        del a, view
        assert counter.live == 1024 and counter.peak == 3072
        counter.reset_peak()
        assert counter.peak == 1024
        del b


def test_weights_are_counted_at_their_real_size():
    found = gpu_memory_counter.estimate(dict(unet=gpu_memory_work.sd15_model("unet")), lambda parts: None)
    # SD 1.5's UNet: 859.5 M parameters, 2 bytes each in float16
    assert found.weights_gib == pytest.approx(859.52e6 * 2 / 2**30, abs=0.01)


def test_attention_is_counted_as_a_fused_kernel():
    """SDPA on the fake device must not store the 4096 x 4096 attention matrices (PyTorch's fused CUDA kernels do not)."""
    parts = dict(pipe=gpu_memory_work.pipeline_parts("text2img", safety_checker=False))
    found = gpu_memory_counter.estimate(parts, lambda m: gpu_memory_work.generate(m["pipe"], steps=1))
    assert (
        found.peak_gib - found.weights_gib < 0.6
    )  # the materialised matrices alone: 8 heads x 4096^2 x 2 x 2 B = 0.5 GiB


@pytest.mark.slow
def test_the_method_is_within_20_percent_of_the_gpu_measurements():
    rows = gpu_memory.check_rows()
    assert len(rows) == 3
    for row in rows:
        assert abs(row["error"]) <= 0.20, row


@pytest.mark.slow
def test_every_lesson_fits_a_t4_and_the_committed_table_is_current():
    """Every lesson's heaviest cell under 14 GiB; docs/gpu-memory.json (lesson 9 and gpu-check read it) is what the
    method gives today: rerun `python -m course_utils gpu-memory --json docs/gpu-memory.json` after changing a lesson."""
    import json

    from course_utils.paths import ROOT

    rows = gpu_memory.lesson_table()
    assert [r["lesson"] for r in rows] == [f"{n:02d}" for n in range(1, 12)]
    for row in rows:
        assert row["peak_gib"] >= row["weights_gib"] > 0
        assert row["fits_t4"], (
            f"lesson {row['lesson']} ({row['where']}): {row['peak_gib']} GiB > {gpu_memory.T4_LIMIT_GIB}"
        )
    committed = json.loads((ROOT / "docs" / "gpu-memory.json").read_text())
    assert committed["lessons"] == rows
    assert [c["estimate_gib"] for c in committed["checks"]] == [c["estimate_gib"] for c in gpu_memory.check_rows()]
