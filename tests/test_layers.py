"""The layers of docs/architecture.md, checked on the source: who may import whom, and who names models."""

import ast
import re
from pathlib import Path

import pytest

from course_utils.paths import ROOT

PACKAGE = ROOT / "course_utils"
MODELS = PACKAGE / "models"
LESSON_MODULES = {
    "by_hand",
    "img2img",
    "inpaint",
    "masks",
    "upscale",
    "long_prompt",
    "community",
    "single_file",
    "visual",
    "steps",
    "images",
    "diagrams",
    "text_embeddings",
    "unet_inside",
    "new_concept",
    "controlnet",
}
BASICS = {"errors", "paths", "device", "precision", "latents", "edges", "requirements"}
TOP = {
    "notebook",
    "measuring",
    "levers",
    "full_size",
    "gpu_memory",
    "gpu_memory_counter",
    "gpu_memory_work",
    "commands",
    "__main__",
}  # what notebooks call
COMMANDS = PACKAGE / "commands"  # what an operator runs: nothing else in course_utils imports it


def sources(folder: Path):
    return sorted(p for p in folder.rglob("*.py") if ".venv" not in p.parts)


def lazy_table() -> set[str]:
    """The modules ``course_utils/__init__.py`` imports on first use: its ``_NAMES`` table and ``_MODULES``."""
    import course_utils

    return set(course_utils._NAMES.values()) | set(course_utils._MODULES)


def course_imports(path: Path) -> set[str]:
    """The course_utils modules ``path`` imports, as dotted names below course_utils (``"models.hub"``, ``"world"``);
    for the package's ``__init__.py``, also its lazy table."""
    if path == PACKAGE / "__init__.py":
        return lazy_table() | {"errors"}
    package = path.relative_to(ROOT).with_suffix("").parts[:-1]  # e.g. ("course_utils", "models")
    packages = {
        "course_utils",
        "course_utils.models",
        "course_utils.commands",
    }  # `from <package> import x` may import a submodule x
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:  # relative: resolve against this file's package
                mod = ".".join(list(package[: len(package) - node.level + 1]) + ([node.module] if node.module else []))
            found.update(f"{mod}.{a.name}" for a in node.names) if mod in packages else found.add(mod)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {n[len("course_utils.") :] for n in found if n.startswith("course_utils.")}


def top(name: str) -> str:
    return name.split(".")[0]


@pytest.mark.parametrize("path", sources(PACKAGE) + sources(ROOT / "training"), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_import_by_string(path):
    """Import explicitly; the one exception is the package's lazy table (course_utils/__init__.py), read by these tests."""
    text = path.read_text()
    if path == PACKAGE / "__init__.py":
        return
    assert "import_module" not in text and "__import__" not in text


def test_the_lazy_table_names_real_modules_and_names():
    import importlib

    import course_utils

    for name, module in course_utils._NAMES.items():
        assert hasattr(importlib.import_module(f"course_utils.{module}"), name), (name, module)
    for module in course_utils._MODULES:
        assert (PACKAGE / f"{module}.py").exists() or (PACKAGE / module / "__init__.py").exists(), module
    assert set(course_utils.__all__) == {"CourseError", *course_utils._NAMES, *course_utils._MODULES}


@pytest.mark.parametrize("path", sources(MODELS), ids=lambda p: p.name)
def test_model_layer_imports_only_itself_and_the_basics(path):
    bad = {m for m in course_imports(path) if top(m) != "models" and top(m) not in BASICS}
    assert not bad, f"{path.name} imports {bad}"


@pytest.mark.parametrize("path", sources(ROOT / "training"), ids=lambda p: p.name)
def test_training_uses_the_model_layer_and_world_only(path):
    bad = {m for m in course_imports(path) if top(m) not in {"models", "world", "scores", "images"} | BASICS}
    assert not bad, f"training/{path.name} imports {bad}: lesson modules are for the lessons"


@pytest.mark.parametrize("name", sorted(LESSON_MODULES | {"world", "scores"}))
def test_lesson_modules_do_not_import_the_top(name):
    bad = {m for m in course_imports(PACKAGE / f"{name}.py") if top(m) in TOP}
    assert not bad, f"{name} imports {bad}"


@pytest.mark.parametrize(
    "path",
    [p for p in sources(PACKAGE) if COMMANDS not in p.parents and p.name != "__main__.py"],
    ids=lambda p: str(p.relative_to(PACKAGE)),
)
def test_only_the_entry_point_imports_the_commands(path):
    bad = {m for m in course_imports(path) if top(m) == "commands"}
    assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}: commands sit on top of the package"


def test_no_import_cycle():
    graph = {}
    for path in sources(PACKAGE):
        mod = ".".join(path.relative_to(PACKAGE).with_suffix("").parts).replace(".__init__", "")
        graph[mod] = {
            m
            for m in course_imports(path)
            if m in {".".join(p.relative_to(PACKAGE).with_suffix("").parts) for p in sources(PACKAGE)}
        }
    state = {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in graph.get(node, ()):
            assert state.get(nxt) != "open", f"import cycle: {' -> '.join(stack + [nxt])}"
            if nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in graph:
        if node not in state:
            visit(node, [node])


REPO_ID = re.compile(r"[\"'](stable-diffusion-v1-5|stabilityai|gsdf|latent-consistency|runwayml|openai)/[\w.-]+[\"']")


# Tools that still name repositories themselves: an expected failure each (strict: it fails once fixed, to drop it here).
@pytest.mark.parametrize(
    "path",
    [p for p in sources(PACKAGE) + sources(ROOT / "training") if MODELS not in p.parents] + sources(ROOT / "tools"),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_only_the_model_layer_names_repos_and_sizes(path):
    text = path.read_text()
    assert not REPO_ID.search(text), f"{path.name} names a Hub repo: {REPO_ID.search(text).group(0)}"
    for setting in ("block_out_channels=", "num_hidden_layers=", "hidden_size=", "layers_per_block="):
        assert setting not in text, f"{path.name} sets {setting} (architectures live in course_utils/models/configs.py)"
