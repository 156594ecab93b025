"""The report of a batch: every edit of the plan with how it ended, as JSON, CSV and a contact sheet.

It is rebuilt from the plan and the ledger at the end of every run (and of a cancelled one), so it
always describes the whole batch, not only what the last run did: edits done by an earlier run say so
(`this_run` false), edits not yet run are `pending`.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pipeline.batch.ledger import Record
from pipeline.batch.plan import Plan
from pipeline.batch.sheet import contact_sheet_html
from pipeline.files import write_atomically

CSV_COLUMNS = ("name", "photo", "status", "reason", "seconds", "inversion_reused", "worker", "attempts", "started",
               "result", "project", "source", "target", "this_run", "stages")


@dataclass(frozen=True)
class RunSummary:
    """What this run did, for the report's head and the last line the CLI prints."""

    done: int
    failed: int
    pending: int
    earlier: int
    """Edits done (or failed for good) by an earlier run and skipped by this one."""
    elapsed_s: float
    photos_per_min: float | None
    workers: tuple[dict[str, Any], ...] = ()
    """What each worker said when it was ready: where it runs, its device, its model load time."""
    cancelled: bool = False
    this_run: frozenset[str] = frozenset()
    """The keys of the edits this run finished (done or failed)."""

    def line(self) -> str:
        earlier = f", {self.earlier} done earlier" if self.earlier else ""
        pending = f", {self.pending} not run" if self.pending else ""
        rate = f" ({self.photos_per_min:.1f} photos/min)" if self.photos_per_min else ""
        return f"{self.done} done, {self.failed} failed{pending}{earlier}{rate}"


def report_rows(plan: Plan, records: Mapping[str, Record], this_run: set[str]) -> list[dict[str, Any]]:
    """One row per edit of the plan, with its latest record."""
    layout, rows = plan.layout, []
    for item in plan.items:
        record = records.get(item.key)
        status = record.status if record is not None else "pending"
        project = layout.project(item.project_name)
        rows.append({
            "name": item.name, "photo": str(item.photo), "source": item.source, "target": item.target,
            "status": status, "reason": record.reason if record else "", "kind": record.kind if record else "",
            "seconds": record.seconds if record else 0.0, "stages": dict(record.stages) if record else {},
            "inversion_reused": record.reused_inversion if record else False,
            "worker": record.worker if record else "", "attempts": record.attempts if record else 0,
            "started": _iso(record.started) if record else "", "this_run": item.key in this_run,
            "result": record.result if record and status == "done" else "",
            "project": project.relative_to(layout.out).as_posix() if project.is_dir() else "",
            "before": layout.before_thumb(item.project_name).relative_to(layout.out).as_posix(),
            "after": layout.after_thumb(item.name).relative_to(layout.out).as_posix() if status == "done" else "",
            "key": item.key,
        })
    return rows


def write_report(plan: Plan, rows: list[dict[str, Any]], summary: RunSummary) -> dict[str, Path]:
    """report.json, report.csv and contact-sheet.html in the output folder, each written atomically."""
    out = plan.layout.out
    head = {"format": "retake-batch-report-1", "written": _iso(time.time()), "recipe": plan.recipe.to_json(),
            "model_identity": plan.model_identity, "run": {
                "done": summary.done, "failed": summary.failed, "pending": summary.pending,
                "done_earlier": summary.earlier, "elapsed_s": round(summary.elapsed_s, 3),
                "photos_per_min": summary.photos_per_min, "cancelled": summary.cancelled,
                "workers": list(summary.workers)}}
    paths = {"json": out / "report.json", "csv": out / "report.csv", "sheet": out / "contact-sheet.html"}
    write_atomically(paths["json"], (json.dumps({**head, "photos": rows}, indent=1, ensure_ascii=False) + "\n").encode())
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow([json.dumps(row[c], sort_keys=True) if c == "stages" else row[c] for c in CSV_COLUMNS])
    write_atomically(paths["csv"], buffer.getvalue().encode("utf-8"))
    title = f"Retake batch: {plan.recipe.method} on {plan.recipe.model}"
    write_atomically(paths["sheet"], contact_sheet_html(title, summary.line(), rows, out).encode("utf-8"))
    return paths


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds")
