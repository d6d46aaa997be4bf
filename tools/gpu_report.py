"""What ``make gpu-check`` concludes and writes: the 14 GiB rule, the report (``docs/gpu-report.md`` for people,
``docs/gpu-report.json`` with everything) and the table printed at the end. Standard library only."""

import json
from pathlib import Path

LIMIT_GIB = 14.0  # a 16 GB T4 leaves PyTorch about 15 GiB
DEFAULT_SETTINGS = "the lessons' own (sd15: 512x512, 50 steps)"


def over_limit(row: dict, limit_gib: float = LIMIT_GIB) -> bool:
    """Whether a notebook's peak GPU memory (allocated by PyTorch) is above the limit.

    Args:
        row (`dict`): its row (``gpu_runs.run_notebook``); ``peak_gib`` `None` (n/a: a CPU run) never is.
        limit_gib (`float`, defaults to 14): the limit; a peak at the limit is within it.

    Returns:
        `bool`: `True` when it is above.
    """
    return row.get("peak_gib") is not None and row["peak_gib"] > limit_gib


def problems(rows: list[dict], limit_gib: float = LIMIT_GIB) -> list[str]:
    """What makes the run fail: notebooks that did not pass, and peaks above the limit.

    Args:
        rows (`list[dict]`): the notebooks' rows.
        limit_gib (`float`, defaults to 14): see :func:`over_limit`.

    Returns:
        `list[str]`: one line each, e.g. ``"01_text_to_image on sd15: peak 15.20 GiB > 14 GiB"``; empty: it passed.
    """
    out = []
    for r in rows:
        if not r["passed"]:
            out.append(f"{r['notebook']} on {r['profile']}: {r['status']} ({r.get('summary', '')})")
        if over_limit(r, limit_gib):
            out.append(f"{r['notebook']} on {r['profile']}: peak {r['peak_gib']:.2f} GiB > {limit_gib:g} GiB")
    return out


def fmt_gib(value: float | None) -> str:
    """A GiB figure as the report and the table show it.

    Args:
        value (`float`, *optional*): GiB; `None` where there is none (a CPU run).

    Returns:
        `str`: two decimals, or ``"n/a"``.
    """
    return "n/a" if value is None else f"{value:.2f}"


def machine_lines(report: dict) -> list[str]:
    """The report's list of what ran where.

    Args:
        report (`dict`): see :func:`write_report`.

    Returns:
        `list[str]`: Markdown list items: the GPU, the versions, the `sd15` source, the settings, the run's time.
    """
    m = report.get("machine", {})
    gpu_memory = m.get("gpu_memory", m.get("gpu_memory_gib", "?"))
    return [
        f"- GPU: {m['gpu']} ({gpu_memory}), driver {m.get('driver', 'n/a')}, CUDA {m.get('cuda') or 'n/a'}"
        if m.get("gpu")
        else "- GPU: none (a CPU run, `--allow-cpu`: peaks n/a)",
        f"- torch {m.get('torch')}, diffusers {m.get('diffusers')}, transformers {m.get('transformers')}, "
        f"huggingface_hub {m.get('huggingface_hub')}, peft {m.get('peft')}, Python {m.get('python')}, "
        f"{m.get('cpus')} CPU cores",
        f"- `tiny`: the course's models in `data/tiny`. `sd15`: {report.get('sd15_source', 'not run')}",
        f"- settings: {report.get('settings') or DEFAULT_SETTINGS}; each notebook in its own "
        "kernel under `pytest --nbval-lax`; seconds = the whole pytest run (kernel start and imports included); "
        f"peak = `torch.cuda.max_memory_allocated()` in that kernel; limit {report.get('limit_gib', LIMIT_GIB):g} GiB "
        "(a 16 GB T4 leaves about 15); estimate = `docs/gpu-memory.json` (`python -m course_utils gpu-memory`: the "
        "heaviest cell on `sd15` at 512x512 in float16, counted on fake tensors without a GPU)",
        f"- whole run: {report.get('total_seconds', 0):.0f} s",
    ]


def bench_lines(bench: dict) -> list[str]:
    """The report's bench section.

    Args:
        bench (`dict`): ``gpu_runs.run_bench``'s result (empty: not run).

    Returns:
        `list[str]`: Markdown lines: its status and time, its note, its output.
    """
    took = f" ({bench['seconds']:.0f} s)" if bench.get("seconds") and "timed out" not in bench["status"] else ""
    md = ["", "## Bench", "", f"`python -m course_utils bench --full`: {bench.get('status', 'not run')}{took}"]
    if bench.get("note"):
        md += ["", bench["note"]]
    if bench.get("output"):
        md += ["", "```", bench["output"].rstrip(), "```"]
    return md


def write_report(report: dict, out_dir: Path) -> tuple[Path, Path]:
    """Write the report files.

    Args:
        report (`dict`): ``date``, ``machine``, ``rows`` (the notebooks'), ``limit_gib``, ``settings``,
            ``sd15_source``, ``bench``, ``total_seconds``, ...
        out_dir (`Path`): the folder (created if needed).

    Returns:
        `tuple[Path, Path]`: ``gpu-report.md`` (the machine, the table, the result, the bench) and
        ``gpu-report.json`` (``report`` as it is).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    limit = report.get("limit_gib", LIMIT_GIB)
    rows = report["rows"]
    md = [
        "# GPU validation run",
        "",
        f"Written by `make gpu-check` (`tools/gpu_check.py`, see `docs/gpu-check.md`) on {report['date']}. "
        "Do not edit: run it again.",
        "",
        *machine_lines(report),
        "",
        "| notebook | profile | seconds | peak GiB | estimate GiB | reserved GiB | result |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        result = ("pass" if r["passed"] else r["status"].upper()) + (
            f" - OVER {limit:g} GiB" if over_limit(r, limit) else ""
        )
        md.append(
            f"| `{r['notebook']}` | {r['profile']} | {r['seconds']:.1f} | {fmt_gib(r.get('peak_gib'))} | "
            f"{fmt_gib(r.get('estimate_gib'))} | {fmt_gib(r.get('reserved_gib'))} | {result} |"
        )
    found = problems(rows, limit)
    md += ["", "**Result: " + ("all passed, every peak within the limit.**" if not found else "FAILED.**")]
    md += [f"- {p}" for p in found]
    md += bench_lines(report.get("bench") or {})
    md_path, json_path = out_dir / "gpu-report.md", out_dir / "gpu-report.json"
    md_path.write_text("\n".join(md) + "\n")
    json_path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return md_path, json_path


def print_table(rows: list[dict], limit_gib: float = LIMIT_GIB) -> None:
    """Print the notebooks' rows as a table (the end of the run's output).

    Args:
        rows (`list[dict]`): the notebooks' rows.
        limit_gib (`float`, defaults to 14): see :func:`over_limit`.
    """
    print(f"\n{'notebook':<28} {'profile':<7} {'seconds':>7} {'peak GiB':>8} {'estimate':>8}  result")
    for r in rows:
        flag = ("pass" if r["passed"] else r["status"].upper()) + (" OVER LIMIT" if over_limit(r, limit_gib) else "")
        print(
            f"{r['notebook']:<28} {r['profile']:<7} {r['seconds']:>7.1f} {fmt_gib(r.get('peak_gib')):>8} "
            f"{fmt_gib(r.get('estimate_gib')):>8}  {flag}"
        )
