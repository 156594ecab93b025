"""The contact sheet: one HTML page of before/after thumbnails a person looks through after a batch.

Workers write two small JPEGs per edit as it finishes (the photo once, each result), so the page stays
light for ten thousand photos (its images load lazily) and costs the driver nothing to build. Every
text on the page comes from the user (names, prompts, reasons) and is escaped; every link is relative
to the output folder, so the folder can be moved or shared whole.
"""

from __future__ import annotations

import html
import io
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

from PIL import Image

from pipeline.files import write_atomically

THUMB_SIDE = 256
_STYLE = """
body { background: #1e1f22; color: #ddd; font: 14px system-ui, sans-serif; margin: 16px; }
h1 { font-size: 18px; font-weight: 600; } p.summary { color: #aaa; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(540px, 1fr)); gap: 12px; }
.card { background: #2b2d31; border-radius: 6px; padding: 8px; }
.card.failed { outline: 2px solid #c0392b; } .card.pending { opacity: 0.6; }
.pair { display: flex; gap: 6px; } .pair figure { margin: 0; flex: 1; text-align: center; }
.pair img { width: 100%; height: 256px; object-fit: contain; background: #111; }
figcaption, .meta { color: #999; font-size: 12px; } .name { font-weight: 600; }
.reason { color: #e57373; } .missing { height: 256px; display: flex; align-items: center; justify-content: center;
  background: #111; color: #666; }
"""


def thumbnail_jpeg(image: Image.Image, side: int = THUMB_SIDE) -> bytes:
    """A JPEG no larger than side x side, for the contact sheet."""
    small = image.convert("RGB")
    small.thumbnail((side, side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    small.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def write_thumbnail(image: Image.Image, path: Path) -> None:
    write_atomically(path, thumbnail_jpeg(image))


def contact_sheet_html(title: str, summary: str, rows: Sequence[dict], out: Path) -> str:
    """The page for the report's rows (pipeline.batch.report), with links relative to `out`."""
    cards = "\n".join(_card(row, out) for row in rows)
    return (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head>\n<body><h1>{html.escape(title)}</h1>"
            f"<p class=\"summary\">{html.escape(summary)}</p>\n<div class=\"grid\">\n{cards}\n</div></body></html>\n")


def _card(row: dict, out: Path) -> str:
    status = row["status"]
    before = _figure(out, row["before"], "before")
    after = _figure(out, row["after"], "after", link=row["result"] if status == "done" else "")
    lines = [f"<div class=\"name\">{html.escape(row['name'])}</div>",
             f"<div class=\"meta\">{html.escape(row['source'])} &rarr; {html.escape(row['target'])}</div>"]
    if status == "failed":
        lines.append(f"<div class=\"reason\">{html.escape(row['reason'])}</div>")
    elif status == "done":
        lines.append(f"<div class=\"meta\">{row['seconds']:.1f} s on {html.escape(row['worker'])}"
                     f"{'' if row['this_run'] else ', done earlier'}</div>")
    else:
        lines.append("<div class=\"meta\">not run yet</div>")
    css = {"done": "card", "failed": "card failed"}.get(status, "card pending")
    return f"<div class=\"{css}\"><div class=\"pair\">{before}{after}</div>{''.join(lines)}</div>"


def _figure(out: Path, thumb: str, caption: str, link: str = "") -> str:
    if thumb and (out / thumb).is_file():
        picture = f"<img loading=\"lazy\" src=\"{html.escape(quote(thumb))}\" alt=\"{caption}\">"
        if link:
            picture = f"<a href=\"{html.escape(quote(link))}\">{picture}</a>"
    else:
        picture = "<div class=\"missing\">&ndash;</div>"
    return f"<figure>{picture}<figcaption>{caption}</figcaption></figure>"
