"""Where the course's files are: ``data/`` (inputs, tokenizer) and ``notebooks/``."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("COURSE_DATA", ROOT / "data"))
NOTEBOOKS_DIR = ROOT / "notebooks"
