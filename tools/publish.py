"""Set the course's public repository URL, in its one place, and write it where it must appear.

The URL lives in ``pyproject.toml`` (``[project.urls] Repository``). A notebook opened on Colab
cannot read that file before it has cloned the repository, so the first code cell of every lesson
carries the URL as its default (``COURSE_REPO`` overrides it), and the README's "Open in Colab"
table links each lesson through it. This script writes both from ``pyproject.toml``;
``tests/test_notebooks_meta.py`` checks that they agree with it.

    python tools/publish.py                                   # rewrite cells and README from pyproject.toml
    python tools/publish.py --repo https://github.com/ORG/NAME  # set a new URL first (when publishing the course)
    make sync                                                 # then bring the .ipynb twins up to date
"""
import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
README = ROOT / "README.md"
URL_LINE = re.compile(r'^Repository = "([^"]+)"$', re.M)
CELL_DEFAULT = re.compile(r'(os\.environ\.get\("COURSE_REPO", ")([^"]+)("\))')
TABLE_START, TABLE_END = "<!-- colab-badges:start -->", "<!-- colab-badges:end -->"


def repository_url() -> str:
    """The repository URL that ``pyproject.toml`` names (``https://github.com/ORG/NAME``)."""
    match = URL_LINE.search(PYPROJECT.read_text())
    if not match:
        sys.exit("pyproject.toml has no [project.urls] Repository = \"...\" line")
    return match.group(1)


def colab_url(repo: str, notebook: str) -> str:
    """The "Open in Colab" link of ``notebooks/<notebook>`` in a GitHub repository."""
    path = re.sub(r"^https://github\.com/", "", repo).removesuffix(".git")
    return f"https://colab.research.google.com/github/{path}/blob/main/notebooks/{notebook}"


def badge_table(repo: str) -> str:
    rows = ["| lesson | open |", "|---|---|"]
    for nb in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        badge = "https://colab.research.google.com/assets/colab-badge.svg"
        rows.append(f"| `{nb.stem}` | [![Open In Colab]({badge})]({colab_url(repo, nb.name)}) |")
    return "\n".join([TABLE_START, *rows, TABLE_END])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repo", help="the new repository URL, e.g. https://github.com/ORG/NAME")
    a = p.parse_args(argv)
    if a.repo:
        PYPROJECT.write_text(URL_LINE.sub(f'Repository = "{a.repo.removesuffix(".git")}"', PYPROJECT.read_text()))
    repo = repository_url()
    for py in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py")):
        text = py.read_text()
        py.write_text(CELL_DEFAULT.sub(lambda m: f"{m.group(1)}{repo}.git{m.group(3)}", text))
    readme = README.read_text()
    start, end = readme.index(TABLE_START), readme.index(TABLE_END) + len(TABLE_END)
    README.write_text(readme[:start] + badge_table(repo) + readme[end:])
    print(f"repository: {repo}; first cells and README updated. Run `make sync` for the .ipynb twins.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
