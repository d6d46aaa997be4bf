"""Every lesson follows the course's conventions: paired, stripped, structured, profile-neutral."""

import json
import re
from pathlib import Path

import jupytext
import pytest

NOTEBOOKS = sorted(Path(__file__).resolve().parent.parent.joinpath("notebooks").glob("[0-9][0-9]_*.ipynb"))
# Outdated APIs and the removed model id (written with [.] etc. so this file does not match itself).
DEPRECATED = re.compile(
    r"unet[.]in_channels|torch_dtype[=]|CLIPFeature[E]xtractor|callback_steps[=]|_encode_promp[t]|runwayml[/]"
)


def test_all_lessons_present():
    numbers = [int(p.name[:2]) for p in NOTEBOOKS]
    assert numbers == list(range(1, 12)), [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_lesson_conventions(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "commit without outputs"
    markdown = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    assert markdown.lstrip().startswith("# Lesson"), "title first"
    for heading in ("What you will learn", "## 1.", "## Exercises", "## Summary"):
        assert heading in markdown, f"missing {heading!r}"
    assert "course_utils" in "".join(code[0]["source"]), "the first code cell sets the course up"
    source = path.with_suffix(".py").read_text()
    assert not re.search(r"[\"']cuda[\"']", source), "ask course_utils for the device"
    assert not DEPRECATED.search(source)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_library_note_before_setup(path):
    """Importing a diffusers pipeline class (or transformers) before ``cu.setup()`` prints transformers' red
    "requires torchvision (not installed)" note before the course's filter is installed: import them after."""
    code = ["".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    first = next(t for t in code if "setup(" in t)
    before = first[: first.index("setup(")]
    assert not re.search(r"from diffusers import .*Pipeline|from transformers import", before), (
        "import pipeline classes and transformers after `choice = cu.setup()`"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_exercises_summary_solutions(path):
    """2-3 exercises, each a prediction with an empty cell after it; the summary; then the worked solutions."""
    cells = json.loads(path.read_text())["cells"]
    text = ["".join(c["source"]) for c in cells]
    heading = lambda h: next(i for i, t in enumerate(text) if t.lstrip().startswith(h))  # noqa: E731
    exercises, summary, solutions = heading("## Exercises"), heading("## Summary"), heading("## Solutions")
    assert exercises < summary < solutions, "Exercises, then Summary, then Solutions (after the summary)"
    attempts = [i for i in range(exercises, summary) if cells[i]["cell_type"] == "code"]
    assert 2 <= len(attempts) <= 3, f"{len(attempts)} exercises: the course asks for 2-3"
    for i in attempts:
        assert text[i].strip() == "# your attempt", "an empty cell for each attempt"
        assert "predict" in text[i - 1].lower(), f"the exercise before cell {i} does not start with a prediction"
    worked = re.findall(r"^### Solution", "\n".join(text[solutions:]), flags=re.M)
    assert len(worked) >= len(attempts), "a worked solution for every exercise"
    assert any(c["cell_type"] == "code" for c in cells[solutions:]), "solutions that run"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_pair_in_sync(path):
    """The .ipynb and its py:percent twin hold the same cells (run `make sync` after editing one)."""
    ipynb = jupytext.read(path)
    py = jupytext.read(path.with_suffix(".py"))
    strip = lambda nb: [(c.cell_type, c.source.strip()) for c in nb.cells]  # noqa: E731
    assert strip(ipynb) == strip(py)


def test_repository_url_is_set_in_one_place():
    """pyproject.toml names the repository; every first cell and the README's Colab links use exactly it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "publish", Path(__file__).resolve().parent.parent / "tools" / "publish.py"
    )
    publish = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(publish)
    repo = publish.repository_url()
    for path in NOTEBOOKS:
        first = "".join(next(c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")["source"])
        assert f'os.environ.get("COURSE_REPO", "{repo}.git")' in first, (
            f"{path.name}: run tools/publish.py and make sync"
        )
    readme = (path.parent.parent / "README.md").read_text()
    assert publish.badge_table(repo) in readme, "README's Colab badges: run tools/publish.py"
