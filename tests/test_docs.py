"""The docs that describe the code, checked against it: the README's layout and the packages' docstrings name every
module, the layer rules they state hold, and every "Lesson NN, §k" reference in a docstring points at a section
that exists."""

import re

import pytest

from course_utils.paths import ROOT

PACKAGE = ROOT / "course_utils"
README = (ROOT / "README.md").read_text()
LAYOUT = README[README.index("## Layout and architecture") :]
LAYOUT = LAYOUT[: LAYOUT.index("```", LAYOUT.index("```") + 3)]  # the folder tree


def modules(folder):
    return sorted(p.stem for p in folder.glob("*.py") if p.stem not in ("__init__", "__main__"))


@pytest.mark.parametrize("name", modules(PACKAGE))
def test_readme_layout_and_package_docstring_name_every_module(name):
    import course_utils

    assert re.search(rf"\b{name}\b", LAYOUT), f"README.md's layout does not name course_utils/{name}.py"
    assert re.search(rf"\b{name}\b", course_utils.__doc__), f"course_utils/__init__.py's docstring does not name {name}"


@pytest.mark.parametrize("name", modules(PACKAGE / "models"))
def test_the_model_layer_docstring_names_every_module(name):
    import course_utils.models

    assert f":mod:`.{name}`" in course_utils.models.__doc__, f"course_utils/models/__init__.py does not name {name}"


@pytest.mark.parametrize("name", modules(PACKAGE / "commands"))
def test_the_commands_docstring_and_readme_name_every_command_module(name):
    import course_utils.commands

    assert f"``{name}``" in course_utils.commands.__doc__, f"course_utils/commands/__init__.py does not name {name}"
    assert re.search(rf"\b{name}\b", LAYOUT[LAYOUT.index("commands/") :]), f"README.md's commands/ does not name {name}"


def test_the_layer_rules_in_prose_match_the_layer_test():
    """README: which modules training/ may import (tests/test_layers.py enforces the same list)."""
    import test_layers

    allowed = re.search(r"training/ +training code[^\n]*imports ([^\n]*)", LAYOUT).group(1)
    for name in ("models", "world", "scores", "images"):
        assert name in allowed, name
    assert "test_training_uses_the_model_layer_and_world_only" in dir(test_layers)


SECTION_REF = re.compile(r"[Ll]esson (\d\d), §(\d+(?:\.\d+)?)")


def references():
    for path in sorted([*PACKAGE.rglob("*.py"), *(ROOT / "training").glob("*.py"), *(ROOT / "tools").glob("*.py")]):
        for lesson, section in SECTION_REF.findall(path.read_text()):
            yield path.relative_to(ROOT).as_posix(), lesson, section


@pytest.mark.parametrize("where,lesson,section", sorted(set(references())))
def test_lesson_section_references_resolve(where, lesson, section):
    (notebook,) = (ROOT / "notebooks").glob(f"{lesson}_*.py")
    headers = re.findall(r"^# #{2,3} (\d+(?:\.\d+)?)[. ]", notebook.read_text(), re.M)
    assert section in headers, f"{where} cites lesson {lesson}, §{section}: {notebook.name} has sections {headers}"
