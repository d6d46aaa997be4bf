"""What the two lanes share (tests/test_float16_lane.py, tests/test_sd15_mirror.py): every lesson once more, under
nbval in a fresh pytest process with another environment, its cell timings kept in ``build/<log>``."""

import subprocess
import sys
import time

from course_utils.paths import ROOT

NOTEBOOKS = sorted(str(p) for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def run_every_lesson(env: dict, log: str, *extra: str, timeout: int) -> tuple[subprocess.CompletedProcess, float]:
    """nbval on every lesson with ``env``; returns the finished process and its seconds.

    Args:
        env (`dict`): the whole environment of the run (e.g. ``COURSE_DTYPE=float16``).
        log (`str`): the file under ``build/`` that gets the run's output (its slowest cells, for developers).
        *extra (`str`): more pytest arguments (e.g. ``--deselect=...``).
        timeout (`int`): seconds.
    """
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=20", *NOTEBOOKS, *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    seconds = time.perf_counter() - start
    (ROOT / "build").mkdir(exist_ok=True)
    (ROOT / "build" / log).write_text(proc.stdout + proc.stderr)
    return proc, seconds


def full_size_cells_of_lesson_9() -> list[str]:
    """``--deselect`` options for lesson 9's timing of SD 1.5's *full-size* architecture (``sd15-random``: the same
    whatever the profile, already run by the `tiny` run of ``make test``; its float16 parts are run by
    tests/test_bench.py) and the solution that reads it: 30 s saved in the sd15 lane, 90 s in the float16 lane.
    Found by their code, so renumbered cells cannot deselect the wrong ones."""
    import nbformat

    path = ROOT / "notebooks" / "09_your_hardware.ipynb"
    code = [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    found = [i for i, src in enumerate(code) if "full_size.full_size_parts(" in src or 'seconds["UNet step' in src]
    assert len(found) == 2, found
    return [f"--deselect=notebooks/{path.name}::Cell {i}" for i in found]


# The cells that only score `tiny`'s pictures (read back with ``world.classify``), found by a call each makes: lesson
# 9's drawn-right scores at three settings (57 s of its float16 run here), lesson 10's LoRA-scale sweep with the old
# prompts' scores (59 s), lesson 11's held-out score and solution 1's sweep (134 s of 301). {lesson: (call, cells)}
SCORING_CALLS = {
    "09_your_hardware": ("scores.drawn_right(pipe, SEEDS, num_inference_steps=50", 1),
    "10_train_it_yourself": ("new_concept.old_prompts_kept(", 1),
    "11_controlnet": ("scores.control_scores(", 2),
}


def scoring_cells() -> list[str]:
    """``--deselect`` options for the cells of :data:`SCORING_CALLS` in the float16 lane, where a CPU computes float16
    several times slower. Their pipeline calls run in float16 elsewhere: in the lessons' other cells here (lesson 9:
    section 3's two settings and section 4's levers; lesson 11: sections 2 and 5), and lesson 10's LoRA at other
    scales in the same cell of the `sd15` lane; the scores themselves run in float32 in ``make test`` (and
    ``evaluate``). Found by their code, so renumbered cells cannot deselect the wrong ones."""
    import nbformat

    options = []
    for name, (call, cells) in SCORING_CALLS.items():
        path = ROOT / "notebooks" / f"{name}.ipynb"
        code = [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
        found = [i for i, src in enumerate(code) if call in src]
        assert len(found) == cells, (name, found)
        options += [f"--deselect=notebooks/{path.name}::Cell {i}" for i in found]
    return options
