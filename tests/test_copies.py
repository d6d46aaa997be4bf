"""Copies of a reference function, marked where they stand, and checked against it (diffusers' ``# Copied from``).

A lesson writes a mechanism out in its cells (the denoising loop, the training loss) that a course_utils module
also has as a function: the reference the tests and the lesson's own asserts check it against. The copy says so
in a comment, on the line before it, in one of two forms:

``# Copied from course_utils.img2img.noise_levels`` (optionally ``with old->new, old2->new2``)
    A true copy, checked here: its code must be the reference function's body. Compared as Python syntax trees
    (``ast.dump``), so what does not count is layout: indentation, line breaks, spaces, comments, quotes,
    redundant parentheses; and the docstring. Every name, constant, call, operator and statement counts. ``with
    old->new`` renames whole words (``\\bold\\b``) in the reference's source first, left to right, for a copy
    that calls a variable by another name. The copy's signature is not compared (a notebook's function may take
    what it needs from the notebook's globals: they then have the reference's parameter names).
``# Simplified from course_utils.by_hand.denoise``
    The lesson writes the mechanism out its own way on purpose (fewer options, its own names, no ``return``);
    listed here and its reference must exist, but it is not compared: the cell's own ``assert`` against the
    reference (or the pipeline) checks it at run time.

What the copy is: if the line after the marker starts a function (``def`` or a decorator), that function's
body; otherwise the lines after the marker up to whichever comes first: a ``# End copy`` line, a line indented
less than the marker, the end of the cell (``# %%``) or of the file.

Where markers are looked for: the code cells of ``notebooks/NN_*.py`` (the py:percent twins; markdown cells are
not read), and every module of ``course_utils/`` and ``training/``, where a marker names another module's
function. A marker that names nothing importable, or something that is not a function, fails; so does a comment
that starts like a marker but does not follow the syntax, and a ``# End copy`` that closes no copy.
"""

import ast
import difflib
import importlib
import inspect
import io
import re
import textwrap
import tokenize
from dataclasses import dataclass, field

import pytest

from course_utils.paths import ROOT

MARKER = re.compile(
    r"#\s*(?P<kind>Copied|Simplified) from\s+(?P<name>(?:course_utils|training)(?:\.\w+)+)"
    r"(?:\s+with\s+(?P<renames>\w+->\w+(?:\s*,\s*\w+->\w+)*))?\s*$"
)
LOOKS_LIKE_A_MARKER = re.compile(r"#\s*(Copied|Simplified)\s+from\b")
END = re.compile(r"#\s*End copy\s*$")


@dataclass
class Marker:
    where: str  # "notebooks/04_image_to_image.py:322"
    kind: str  # "Copied" or "Simplified"
    name: str  # "course_utils.img2img.noise_levels"
    renames: list = field(default_factory=list)  # [("old", "new"), ...]
    code: str = ""  # the copy's code, dedented (a function's body, or the lines of a cell)
    is_function: bool = False  # the copy is a `def`: compare its body
    error: str = ""  # a malformed marker or a stray `# End copy`

    def __str__(self):
        return f"{self.where}: {self.kind} from {self.name}"


def code_blocks():
    """``(path, first line number, lines)`` of every piece of code markers may sit in: each code cell of a
    notebook's py:percent file, each whole module of course_utils/ and training/."""
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py")):
        lines = path.read_text().splitlines()
        starts = [i for i, line in enumerate(lines) if line.startswith("# %%")] + [len(lines)]
        for begin, end in zip(starts, starts[1:]):
            if "[markdown]" not in lines[begin]:
                yield path, begin + 2, lines[begin + 1 : end]
    for folder in ("course_utils", "training"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            yield path, 1, path.read_text().splitlines()


def comments(lines):
    """``{index: text}`` of the lines whose first token is a comment (so not a ``#`` inside a string)."""
    found = {}
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO("\n".join(lines) + "\n").readline))
    except (tokenize.TokenError, SyntaxError):  # a cell that does not tokenize: read every `#` line
        return {i: line.strip() for i, line in enumerate(lines) if line.lstrip().startswith("#")}
    for tok in tokens:
        if tok.type == tokenize.COMMENT and not lines[tok.start[0] - 1][: tok.start[1]].strip():
            found[tok.start[0] - 1] = tok.string
    return found


def indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def the_copy(lines, at):
    """The copy that the marker on line ``at`` stands before: ``(code, is_function, index of its `# End copy`)``."""
    rest = lines[at + 1 :]
    if rest and rest[0].lstrip().startswith(("def ", "@", "async def ")):
        return function_at(lines, at + 1), True, None
    code, level = [], indent(lines[at])
    for k, line in enumerate(rest):
        if END.match(line.strip()) and indent(line) == level:
            return textwrap.dedent("\n".join(code)), False, at + 1 + k
        if line.strip() and not line.lstrip().startswith("#") and indent(line) < level:
            break
        code.append(line)
    return textwrap.dedent("\n".join(code)), False, None


def function_at(lines, k) -> str:
    """The source of the function whose first line (its first decorator, or its ``def``) is line ``k``, dedented."""
    tree = ast.parse("\n".join(lines))
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            if first == k + 1:
                return textwrap.dedent("\n".join(lines[k : node.end_lineno]))
    raise AssertionError(f"no function starts on line {k + 1}")


def markers(blocks=None):
    """Every marker in ``blocks`` (default: :func:`code_blocks`), malformed ones included (with their ``error``)."""
    found = []
    for path, first, lines in code_blocks() if blocks is None else blocks:
        rel = path.relative_to(ROOT).as_posix()
        closed = set()
        for i, text in sorted(comments(lines).items()):
            where = f"{rel}:{first + i}"
            m = MARKER.fullmatch(text.strip())
            if m is None:
                if LOOKS_LIKE_A_MARKER.match(text.strip()):
                    found.append(Marker(where, "?", text.strip(), error=f"not the marker syntax: {text.strip()!r}"))
                elif END.match(text.strip()) and i not in closed:
                    found.append(Marker(where, "?", "# End copy", error="a `# End copy` that closes no copy"))
                continue
            renames = [tuple(r.strip().split("->")) for r in (m["renames"] or "").split(",") if r.strip()]
            try:
                code, is_function, end = the_copy(lines, i)
            except (SyntaxError, AssertionError) as e:  # (a cell that does not parse)
                found.append(Marker(where, m["kind"], m["name"], error=f"its copy cannot be read: {e}"))
                continue
            if end is not None:
                closed.add(end)
            found.append(Marker(where, m["kind"], m["name"], renames, code, is_function))
    return found


MARKERS = markers()
COPIES = [m for m in MARKERS if m.kind == "Copied"]
SIMPLIFIED = [m for m in MARKERS if m.kind == "Simplified"]


def reference(name: str):
    """The function ``name`` names (``course_utils.by_hand.denoise``, ``pkg.module.Class.method``), unwrapped."""
    parts = name.split(".")
    for k in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:k]))
        except ModuleNotFoundError:
            continue
        module = obj.__name__
        for attr in parts[k:]:
            if not hasattr(obj, attr):
                raise AssertionError(f"{name}: {'.'.join(parts[:k])} has no {'.'.join(parts[k:])}")
            obj = getattr(obj, attr)
        obj = inspect.unwrap(obj)
        assert inspect.isfunction(obj), f"{name} is a {type(obj).__name__}, not a function"
        assert obj.__module__ == module, f"{name} is {obj.__module__}'s {obj.__qualname__}: name that one"
        return obj
    raise AssertionError(f"{name}: no such module")


def without_docstring(body: list) -> list:
    first = body[0] if body else None
    is_doc = (
        isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str)
    )
    return body[1:] if is_doc else body


def normalised(body: list) -> str:
    """The statements as the comparison sees them: the syntax tree, without positions (and without a docstring)."""
    return "\n".join(ast.dump(statement) for statement in without_docstring(body))


def body_of(source: str) -> list:
    """The statements of the (only) function in ``source``."""
    (function,) = ast.parse(textwrap.dedent(source)).body
    assert isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)), "not a function"
    return function.body


def renamed(source: str, renames: list) -> str:
    for old, new in renames:
        source = re.sub(rf"\b{re.escape(old)}\b", new, source)
    return source


def readable(body: list) -> list[str]:
    return ast.unparse(ast.Module(body=body, type_ignores=[])).splitlines()


def test_there_are_markers_and_every_one_is_well_formed():
    assert COPIES and SIMPLIFIED, "no markers found: is the search broken?"
    bad = [f"{m.where}: {m.error}" for m in MARKERS if m.error]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("marker", [m for m in MARKERS if not m.error], ids=str)
def test_the_marker_names_a_function_that_exists(marker):
    function = reference(marker.name)
    if not marker.where.startswith("notebooks/"):  # in a module: a copy of *another* module's function
        own = marker.where.split(":")[0].removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        assert function.__module__ != own, f"{marker}: names a function of its own module"


@pytest.mark.parametrize("marker", COPIES, ids=str)
def test_the_copy_has_not_drifted(marker):
    source = renamed(textwrap.dedent(inspect.getsource(reference(marker.name))), marker.renames)
    theirs = body_of(source)
    mine = body_of(marker.code) if marker.is_function else ast.parse(marker.code).body
    assert mine, f"{marker}: no code follows the marker"
    if normalised(mine) != normalised(theirs):
        theirs, mine = readable(without_docstring(theirs)), readable(without_docstring(mine))
        diff = "\n".join(difflib.unified_diff(theirs, mine, marker.name, marker.where, lineterm=""))
        pytest.fail(f"{marker}: the copy drifted from its reference (after the renames, layout ignored):\n{diff}")


def test_the_syntax_is_checked():
    """The rule on examples: layout and comments do not count, a changed constant or name does; renames work."""
    ref = "def f(x, y):\n    '''doc'''\n    z = (x +\n         y)  # sum\n    return z * 2\n"
    same = "z = x + y\nreturn z*2  # twice"
    assert normalised(ast.parse(same).body) == normalised(body_of(ref))
    assert normalised(ast.parse("z = x + y\nreturn z * 3").body) != normalised(body_of(ref))
    assert normalised(ast.parse("w = x + y\nreturn w * 2").body) == normalised(body_of(renamed(ref, [("z", "w")])))
    assert MARKER.fullmatch("# Copied from course_utils.by_hand.denoise with a->b")["renames"] == "a->b"
    assert not MARKER.fullmatch("# Copied from by_hand.denoise")  # the full dotted name, from the package
    code, is_function, end = the_copy(["    # Copied from m.f", "    a = 1", "    # End copy", "    b = 2"], 0)
    assert (code, is_function, end) == ("a = 1", False, 2)
    lines = [
        "if True:",
        "    # Copied from m.f",
        "    @dec",
        "    def g(",
        "        a,",
        "    ):",
        "        return a",
        "x = 1",
    ]
    code, is_function, _ = the_copy(lines, 1)
    assert is_function and code.splitlines() == ["@dec", "def g(", "    a,", "):", "    return a"]
    cell = [
        "x = 1",
        "# Copied from course_utils.by_hand.denoise with a->b, c->d",
        "y = 2",
        "# End copy",
        "# Copied from by_hand.denoise",
        "# Simplified from course_utils.by_hand.denoise because",
        "# End copy",
        "s = '# Copied from nowhere'",
    ]
    found = markers([(ROOT / "notebooks" / "example.py", 1, cell)])
    assert [(m.kind, m.renames, m.code) for m in found[:1]] == [("Copied", [("a", "b"), ("c", "d")], "y = 2")]
    assert [m.error.split(":")[0] for m in found[1:]] == ["not the marker syntax"] * 2 + [
        "a `# End copy` that closes no copy"
    ]
    with pytest.raises(AssertionError, match="has no"):
        reference("course_utils.by_hand.no_such_function")
    with pytest.raises(AssertionError, match="no such module"):
        reference("course_utils_nothing.f")
