"""The semantic benchmark's tables: aggregates per task and row, and one line per case, in Markdown.

Why apart: the runner merges records from several calls (rows added later, runs cut by a time
limit); the tables are always rebuilt from every record the results file holds, so they never
disagree with it.

Rates count every attempted run: a run that failed with an error counts as neither a success nor a
kept picture. Means (PSNR, SSIM, reconstruction, seconds) are over the runs that finished.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

REFERENCE_ROWS = ("ground truth", "unchanged")


def aggregate(runs: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Counts, rates and means of one cell's runs."""
    runs = list(runs)
    attempted = [r for r in runs if "skipped" not in r]
    ok = [r for r in attempted if "error" not in r]

    def rate(key: str) -> float | None:
        return 100.0 * sum(bool(r.get(key)) for r in ok) / len(attempted) if attempted else None

    def mean(values: list[float]) -> float | None:
        values = [v for v in values if v is not None and not math.isnan(v)]
        return sum(values) / len(values) if values else None

    return {
        "attempted": len(attempted), "errors": len(attempted) - len(ok), "skipped": len(runs) - len(attempted),
        "success": rate("success"), "kept": rate("kept"),
        "success_and_kept": 100.0 * sum(bool(r["success"] and r["kept"]) for r in ok) / len(attempted)
        if attempted else None,
        "success_share": mean([100 * r["success_share"] for r in ok]),
        "kept_share": mean([100 * r["kept_share"] for r in ok]),
        "psnr_outside": mean([r["psnr_outside"] for r in ok]),
        "ssim_outside": mean([r["ssim_outside"] for r in ok]),
        "reconstruction_psnr": mean([r.get("reconstruction_psnr") for r in ok]),
        "seconds": mean([r["seconds"]["total"] for r in ok if "seconds" in r]),
        "invert_seconds": mean([r["seconds"]["invert"] for r in ok if "seconds" in r]),
        "edit_seconds": mean([r["seconds"]["edit"] for r in ok if "seconds" in r]),
    }


def tables(report: dict[str, Any], order: Iterable[str] = ()) -> dict[str, dict[str, dict[str, Any]]]:
    """{task or "all": {row: aggregate}} over every record of the report; tasks in `order` first."""
    runs = report["runs"]
    tasks = [t for t in dict.fromkeys([*order, *(r["task"] for r in runs)]) if any(r["task"] == t for r in runs)]
    rows = list(dict.fromkeys(r["row"] for r in runs))
    out = {}
    for task in [*tasks, "all"]:
        out[task] = {row: aggregate(r for r in runs if r["row"] == row and task in ("all", r["task"])) for row in rows}
    return out


def _fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _columns(report: dict[str, Any], registered: list[str]) -> list[str]:
    """The reference rows, then the baseline and the methods in registry order, then any others."""
    present = list(dict.fromkeys(r["row"] for r in report["runs"]))
    order = [*REFERENCE_ROWS, *[r for r in registered if r in present or r + "+inputs" in present]]
    order += [r + "+inputs" for r in registered if r + "+inputs" in present]
    return [r for r in dict.fromkeys(order + present) if r in present]


def write_markdown(report: dict[str, Any], path: Path, registered: list[str], primary: dict[str, tuple[str, ...]]
                   | None = None) -> Path:
    """The tables of a results file, as Markdown next to it: columns in the order of `registered`
    (after the reference rows), tasks in the order of `primary` (task -> the methods named for it)."""
    primary = primary or {}
    agg = tables(report, primary)
    columns = _columns(report, registered)
    settings = report.get("settings", {})
    lines = [
        "# Semantic editing benchmark on the demo world",
        "",
        f"Device: **{report.get('gpu')}**, torch {report.get('torch')}, {report.get('workers')} worker process(es) "
        f"(timings of several workers share a GPU). Model: `{settings.get('model')}` ({report.get('model_identity')}); "
        f"working size {settings.get('max_side')} px; named inputs: {settings.get('inputs')}; parameter overrides: "
        f"{settings.get('overrides') or 'none (every method at its defaults)'}; pixels kept = outside the edit "
        f"region dilated by {settings.get('dilate')} px. Produced by `{report.get('command')}`.",
        "",
        f"Cases: {len(report['cases'])} (" + ", ".join(
            f"{t} {sum(c['task'] == t for c in report['cases'])}" for t in dict.fromkeys(c["task"] for c in report["cases"]))
        + "). Rows: `ground truth` is the case's target picture (the judge's ceiling), `unchanged` the source "
        "returned as it is, `baseline` DDIM inversion + the target prompt with no attention control (p2p with "
        "inversion=ddim and no replacement), then every registered method at its defaults. "
        "**Bold**: the methods the issue names for the task. A value followed by (k) is over the k cases that "
        "row ran on, not over all the task's cases (the reference rows cover every case).",
        "",
    ]
    accuracy = report.get("judge_accuracy")
    if accuracy:
        lines += [f"Judge accuracy on held-out pictures ({settings.get('judge')}/accuracy.json), in %:", "",
                  "| pictures | " + " | ".join(next(iter(accuracy.values()))) + " |",
                  "|---|" + "---|" * len(next(iter(accuracy.values())))]
        lines += [f"| {name} | " + " | ".join(_fmt(100 * v, 1) for v in acc.values()) + " |"
                  for name, acc in accuracy.items()]
        lines.append("")

    def grid(title: str, key: str, digits: int = 0, note: str = "") -> None:
        lines.extend([f"## {title}", ""] + ([note, ""] if note else []))
        lines.append("| task | cases | " + " | ".join(columns) + " |")
        lines.append("|---|---|" + "---|" * len(columns))
        for task, cells in agg.items():
            n = sum(1 for c in report["cases"] if task in ("all", c["task"]))
            values = []
            for row in columns:
                cell = cells.get(row)
                text = "-" if cell is None or not cell["attempted"] else _fmt(cell[key], digits) + (
                    f" ({cell['attempted']})" if cell["attempted"] != n else "")
                values.append(f"**{text}**" if row.removesuffix("+inputs") in primary.get(task, ()) else text)
            lines.append(f"| {task} | {n} | " + " | ".join(values) + " |")
        lines.append("")

    grid("Edit success (%)", "success", note="The judge reads every changed attribute as the target caption has it.")
    grid("Changed attributes read right (%, mean)", "success_share",
         note="Partial credit: each changed key counts (an added subject: its presence and each of its attributes).")
    grid("Preservation by the judge (%)", "kept",
         note="The judge reads every other attribute (background, the subject's other attributes, the other subjects, "
              "empty places) as it is.")
    grid("Success and preservation (%)", "success_and_kept")
    grid("PSNR outside the edit region (dB, mean)", "psnr_outside", 1,
         note="Against the source; 100 dB means identical pixels.")
    grid("SSIM outside the edit region (mean)", "ssim_outside", 3)

    lines += ["## Per row, all tasks", "",
              "| row | runs | errors | skipped | reconstruction PSNR (dB) | invert (s) | tune + edit (s) | total (s) |",
              "|---|---|---|---|---|---|---|---|"]
    for row in columns:
        a = agg["all"][row]
        lines.append(f"| {row} | {a['attempted']} | {a['errors']} | {a['skipped']} | {_fmt(a['reconstruction_psnr'], 1)} "
                     f"| {_fmt(a['invert_seconds'], 2)} | {_fmt(a['edit_seconds'], 2)} | {_fmt(a['seconds'], 2)} |")
    lines += ["", "Seconds are wall time per run from the inversion to the decoded result (a method's tuning stage runs "
                  "inside the edit stage; each record has the time of every stage); `sharing` in each record says "
                  "how many runs shared the GPU meanwhile."]
    vae = [c["vae_psnr"] for c in report["cases"]]
    lines += ["", f"The VAE round trip of the sources (the ceiling of any reconstruction): "
                  f"{_fmt(sum(vae) / len(vae) if vae else None, 1)} dB mean.", ""]
    errors = sorted({r["error"] for r in report["runs"] if "error" in r})
    skipped = sorted({f"{r['row']}: {r['skipped']}" for r in report["runs"] if "skipped" in r})
    if errors or skipped:
        lines += ["Errors and skips:", ""] + [f"- {e}" for e in errors[:20]] + [f"- {s}" for s in skipped] + [""]
    missing = [r for r in registered if not any(c.removesuffix("+inputs") == r for c in columns)]
    if missing:
        lines += [f"Not run yet: {', '.join(missing)}.", ""]

    lines += ["## Per case", "", "S: edit success, K: kept (judge), E: error, blank: not run or skipped.", "",
              "| case | change | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
    by_case: dict[str, dict[str, dict]] = {}
    for r in report["runs"]:
        by_case.setdefault(r["case"], {})[r["row"]] = r
    for case in report["cases"]:
        change = ", ".join(f"{k}={v}" for k, v in case["changed"].items())
        cells = []
        for row in columns:
            r = by_case.get(case["case"], {}).get(row)
            if r is None or "skipped" in r:
                cells.append("")
            elif "error" in r:
                cells.append("E")
            else:
                cells.append(("S" if r["success"] else "·") + ("K" if r["kept"] else "·"))
        lines.append(f"| {case['case']} | {change} | " + " | ".join(cells) + " |")
    path.write_text("\n".join(lines) + "\n")
    return path
