"""The core-time method (tools/core_time.py, docs/core-time.md) and the course's limits: each lesson's core at most
45 minutes, the ten at most 6 hours. Content limits, counted from the text: no clock involved."""

import importlib.util

import pytest

from course_utils.paths import ROOT

spec = importlib.util.spec_from_file_location("core_time", ROOT / "tools" / "core_time.py")
core_time = importlib.util.module_from_spec(spec)
spec.loader.exec_module(core_time)
LESSONS = core_time.lessons()


def test_the_method_counts_words_cells_and_lines_up_to_the_exercises(tmp_path):
    lesson = tmp_path / "01_x.py"
    lesson.write_text(
        "# %% [markdown]\n# # Title\n#\n# one two three four\n\n"
        "# %%\nimport os  # set-up: run, not read\nimport sys\n\n"
        "# %%\nx = 1\n# a comment\n\ny = 2\n\n"
        "# %% [markdown]\n# ## Exercises\n# not counted\n\n# %%\nz = 3\n"
    )
    r = core_time.core_minutes(lesson)
    assert (r["words"], r["code_cells"], r["code_lines"]) == (6, 2, 2)
    assert r["minutes"] == pytest.approx(6 / 120 + 2 * 1.0 + 2 * 4 / 60)


@pytest.mark.parametrize("name", sorted(LESSONS))
def test_each_lesson_core_is_at_most_45_minutes(name):
    minutes = LESSONS[name]["minutes"]
    assert minutes <= core_time.LESSON_LIMIT_MIN, f"{name}: {minutes:.0f} min (python3 tools/core_time.py)"


def test_the_course_core_is_at_most_6_hours():
    total = core_time.first_ten(LESSONS)  # lessons 1-10: issue 26's limit (lesson 11 comes after)
    assert total <= core_time.COURSE_LIMIT_MIN, f"{total:.0f} min = {total / 60:.1f} h\n{core_time.table(LESSONS)}"
