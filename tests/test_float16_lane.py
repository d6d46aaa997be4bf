"""Every lesson on `tiny` in float16 on this CPU: what a Colab GPU computes, executed without a GPU.

On CUDA the course loads float16 weights (``cu.get_dtype``); ``COURSE_DTYPE=float16`` makes it do the same on a CPU,
so every half-precision branch, every dtype cast and every assert runs in float16 here: by-hand checks within
``by_hand.tolerance``, training that follows diffusers' scripts (float32 LoRA, autocast, a GradScaler) with no NaN.

A CPU computes float16 slowly (no float16 hardware: `tiny`'s UNet step is 6 times slower than in float32 in
PyTorch's default layout, 3 times in channels-last, which ``device.fast_layout`` picks), so this run takes 10
sampling steps instead of 25 (``COURSE_SETTINGS``) and lesson 10 the short training schedule of the float32 run.
Lesson 9's timing of SD 1.5's full-size architecture is left out (90 s at 512x512 here): it is the same on every
profile, runs in float32 in ``make test``'s own run of the lessons, and its float16 parts run at 64x64 in
tests/test_bench.py. The cells that only score `tiny`'s pictures (lesson 9's drawn-right scores, 57 s here; lesson
10's LoRA-scale sweep, 59 s; lesson 11's two, 134 s) are left out too (``lanes.scoring_cells``): their pipeline calls
run in float16 elsewhere (the lessons' other cells here; lesson 10's other LoRA scales in the `sd15` lane), and the
cells themselves in float32 in ``make test``. Lesson 9 times each setting once (``COURSE_BENCH=quick``):
every lever still runs, and its timings are not what a lane tests.
"""

import os

import pytest
from lanes import full_size_cells_of_lesson_9, run_every_lesson, scoring_cells

pytestmark = [pytest.mark.slow, pytest.mark.lane]

# What this run changes: the dtype, and 10 sampling steps (float16 costs 3x per step here).
FLOAT16_ENV = dict(
    COURSE_DTYPE="float16",
    COURSE_SETTINGS="num_inference_steps=10",
    COURSE_TRAIN_STEPS="16",
    COURSE_BENCH="quick",  # lesson 9: one timed call per setting instead of 2
    COURSE_PROFILE="tiny",
    HF_HUB_OFFLINE="1",
    COURSE_STRICT_WARNINGS="1",
)


def test_every_lesson_runs_on_tiny_in_float16():
    env = {k: v for k, v in os.environ.items() if not k.startswith("COURSE_") or k == "COURSE_CACHE"}
    env.update(FLOAT16_ENV)
    proc, seconds = run_every_lesson(
        env, "float16-lane.log", *full_size_cells_of_lesson_9(), *scoring_cells(), timeout=3000
    )  # the slowest cells, for developers
    assert proc.returncode == 0, proc.stdout[-8000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert " passed" in last and "failed" not in last and "error" not in last, last
    print(f"every lesson on tiny in float16: {seconds:.0f} s ({last})")
