"""The slide report: one self-contained, printable HTML file per slide.

Everything is inline (images as ``data:`` URIs, the style in the page, no scripts), and the
page's Content-Security-Policy forbids any request, so the file opens the same on the
station, on a laptop with no network and from an e-mail attachment; "Print -> Save as PDF"
in any browser gives A4 pages (print CSS: margins, no card split over two pages, the gallery
on its own pages). Every value that comes from outside (slide id, operator, notes, file
names, reasons) is HTML-escaped.
"""

from __future__ import annotations

import base64
import socket
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import datetime
from html import escape
from pathlib import PurePath
from typing import Any

import cv2
import numpy as np

from .. import __version__
from .capture_trigger import preview
from .classes import DESCRIPTIONS
from .imageio import FieldError, read_field
from .pipeline import REASONS
from .results_log import ResultsLog
from .segment import draw_outline, segment
from .slide import NOTICE
from .station import tally_from_rows

#: Width of a field's thumbnail in the report, in pixels (about 45 mm printed).
THUMB_WIDTH = 240
#: Characters of a SHA-256 shown (enough to tell files apart; the full one is in the log).
SHA_PREFIX = 12

#: A field's RGB uint8 (H, W, 3) image or None, by the field's dict (a row of
#: ``ResultsLog.results``) or from a mapping of its id.
Images = Callable[[dict[str, Any]], np.ndarray | None] | Mapping[Any, np.ndarray | None]

_CSS = """
@page { size: A4; margin: 14mm 12mm; }
* { box-sizing: border-box; }
body { font: 10.5pt/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: #111; margin: 0 auto; max-width: 190mm; padding: 8mm 0;
  -webkit-print-color-adjust: exact; print-color-adjust: exact; }
h1 { font-size: 17pt; margin: 0 0 2mm; }
h2 { font-size: 12.5pt; margin: 6mm 0 2mm; border-bottom: 1px solid #bbb;
  break-after: avoid; }
.notice { border: 2px solid #b45309; background: #fff7ed; padding: 2mm 3mm;
  font-weight: 600; margin: 3mm 0; }
.call { border: 2px solid #1d4ed8; background: #eff6ff; padding: 3mm; margin: 3mm 0;
  break-inside: avoid; }
.call.refer { border-color: #b91c1c; background: #fef2f2; }
.call .text { font-size: 13pt; font-weight: 700; }
table { border-collapse: collapse; width: 100%; margin: 1mm 0; }
th, td { text-align: left; padding: 1mm 2mm; border-bottom: 1px solid #ddd;
  vertical-align: top; }
th { background: #f3f4f6; }
td.n, th.n { text-align: right; }
table.info th { width: 30%; background: none; font-weight: 600; }
tr { break-inside: avoid; }
.muted { color: #555; }
.mono { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 9pt;
  word-break: break-all; }
.gallery { display: grid; grid-template-columns: repeat(4, 1fr); gap: 3mm; }
.card { border: 1px solid #ccc; padding: 1.5mm; break-inside: avoid; font-size: 8.5pt; }
.card img { width: 100%; display: block; }
.card .noimg { aspect-ratio: 4 / 3; background: #eee; display: flex;
  align-items: center; justify-content: center; color: #666; }
.card.flagged { border: 2px solid #b91c1c; }
.card .label { font-weight: 700; font-size: 9.5pt; }
.reason { color: #b91c1c; }
footer { margin-top: 6mm; border-top: 1px solid #bbb; padding-top: 2mm; font-size: 8.5pt;
  color: #444; }
@media print {
  body { padding: 0; max-width: none; }
  section.fields { break-before: page; }
}
"""

#: No request of any kind: inline style, data: images, nothing else.
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; form-action 'none'"


def _e(value: Any) -> str:
    """HTML-escaped text of a value ("" for None)."""
    return "" if value is None else escape(str(value), quote=True)


def _when(t: float | None) -> str:
    if t is None:
        return ""
    return datetime.fromtimestamp(t).astimezone().strftime("%Y-%m-%d %H:%M:%S %z")


def _duration(start: float | None, end: float | None) -> str:
    if start is None or end is None:
        return ""
    minutes, seconds = divmod(int(round(end - start)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {seconds:02d} s"


def _sha(value: str | None) -> str:
    return f'<span class="mono">{_e(value[:SHA_PREFIX])}</span>' if value else "unknown"


def _name(source_id: str) -> str:
    """The file name of a source id that is a path, else the id itself."""
    return PurePath(source_id).name or source_id


def thumbnail(rgb: np.ndarray, width: int = THUMB_WIDTH) -> np.ndarray:
    """An RGB uint8 field at most ``width`` px wide with its blast-mask outline."""
    small = np.ascontiguousarray(preview(rgb, width))
    return draw_outline(small, segment(small).mask)


def _data_uri(rgb: np.ndarray) -> str:
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85]
    )
    if not ok:
        raise ValueError(f"cannot encode a {rgb.shape} image as JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def _image(images: Images, field: dict[str, Any]) -> np.ndarray | None:
    if callable(images):
        return images(field)
    return images.get(field.get("id"), images.get(field.get("source_id")))


def _flagged(field: dict[str, Any]) -> bool:
    return field.get("error") is not None or bool(field.get("uncertain"))


def _reasons(field: dict[str, Any]) -> str:
    if field.get("error") is not None:
        return f'<span class="reason">error: {_e(field["error"])}</span>'
    return ", ".join(
        f'<span class="reason" title="{_e(REASONS.get(r, ""))}">{_e(r)}</span>'
        for r in field.get("reasons") or ()
    )


def _confidence(field: dict[str, Any]) -> str:
    c = field.get("confidence")
    return "" if c is None else f"{100 * float(c):.1f}%"


def _info_table(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="info">{body}</table>'


def _call_box(slide: dict[str, Any], tally: dict[str, Any] | None) -> str:
    call = slide.get("call")
    if call:
        heading = "Slide call"
        label, text, refer = call.get("label"), call.get("text"), call.get("refer")
    elif tally:
        heading = "Running call (the slide is still open; nothing is stored yet)"
        label, text, refer = tally.get("call"), tally.get("explanation"), tally.get("refer")
    else:
        return '<div class="call">The slide is still open: no call yet.</div>'
    refer_text = "not stated" if refer is None else "yes" if refer else "no"
    cls = "call refer" if refer else "call"
    return (
        f'<div class="{cls}"><div class="muted">{_e(heading)}</div>'
        f'<div class="text">{_e(text)}</div>'
        f"<div>Called class: {_e(DESCRIPTIONS.get(label, label) if label else 'none')}"
        f" &middot; Refer to a haematologist: <b>{refer_text}</b></div></div>"
    )


def _counts_table(fields: list[dict[str, Any]]) -> str:
    done = [f for f in fields if f.get("error") is None]
    labels = Counter(f.get("label") for f in done)
    confident = Counter(f.get("label") for f in done if not f.get("uncertain"))
    rows = "".join(
        f"<tr><td>{_e(DESCRIPTIONS.get(k, k))}</td><td class='n'>{labels[k]}</td>"
        f"<td class='n'>{confident[k]}</td></tr>"
        for k in sorted(labels, key=lambda k: (-labels[k], str(k)))
    )
    errors = len(fields) - len(done)
    uncertain = sum(bool(f.get("uncertain")) for f in done)
    return (
        f"<p>{len(fields)} fields: {len(done)} classified ({uncertain} flagged uncertain), "
        f"{errors} could not be classified.</p>"
        "<table><tr><th>Class</th><th class='n'>Fields</th><th class='n'>Confident</th></tr>"
        f"{rows}</table>"
    )


def _flagged_table(fields: list[dict[str, Any]]) -> str:
    flagged = [(i, f) for i, f in enumerate(fields, 1) if _flagged(f)]
    if not flagged:
        return "<p>No field was flagged.</p>"
    rows = "".join(
        f"<tr><td class='n'>{i}</td><td class='mono'>{_e(_name(f.get('source_id', '')))}</td>"
        f"<td>{_e(f.get('label') or '')}</td><td class='n'>{_confidence(f)}</td>"
        f"<td>{_reasons(f)}</td></tr>"
        for i, f in flagged
    )
    used = sorted({r for _, f in flagged for r in f.get("reasons") or () if r in REASONS})
    legend = "".join(f"<li><b>{_e(r)}</b>: {_e(REASONS[r])}</li>" for r in used)
    return (
        "<table><tr><th class='n'>#</th><th>File / frame</th><th>Label</th>"
        f"<th class='n'>Confidence</th><th>Reasons</th></tr>{rows}</table>"
        + (f'<ul class="muted">{legend}</ul>' if legend else "")
    )


def _card(i: int, field: dict[str, Any], images: Images) -> str:
    try:
        rgb = _image(images, field)
    except (FieldError, OSError, ValueError):
        rgb = None
    if rgb is None:
        img = '<div class="noimg">image not kept</div>'
    else:
        img = f'<img alt="field {i}" src="{_data_uri(thumbnail(rgb))}">'
    label = field.get("label") or "not classified"
    return (
        f'<div class="{"card flagged" if _flagged(field) else "card"}">{img}'
        f'<div><span class="label">#{i} {_e(label)}</span> {_confidence(field)}</div>'
        f'<div class="mono">{_e(_name(field.get("source_id", "")))}</div>'
        f"<div>{_reasons(field)}</div></div>"
    )


def render_report(
    slide: dict[str, Any],
    fields: list[dict[str, Any]],
    images: Images,
    *,
    tally: dict[str, Any] | None = None,
    station: dict[str, str] | None = None,
    now: float | None = None,
) -> str:
    """One slide's report as a self-contained HTML page (see the module doc).

    Parameters
    ----------
    slide : the slide's stored record (``ResultsLog.record(...)["slide"]``): ``id``,
        ``state``, ``started``, ``ended``, ``operator``, ``notes``, ``model``,
        ``model_sha256`` and ``call`` (``{"label", "text", "refer", ...}``, once ended).
    fields : its fields in order (``ResultsLog.results``): ``source_id``, ``time``,
        ``label``, ``confidence``, ``uncertain``, ``reasons``, ``error``, ``model_sha256``...
    images : a field's RGB uint8 (H, W, 3) image (None: not kept), as a function of the
        field's dict or a mapping from its ``id`` (or ``source_id``).
    tally : the running call of an open slide (``SlideTally.summary()``), shown as such.
    station : ``hostname`` and ``leukedge`` version; default this machine's.
    now : the report's time (default now).
    """
    station = station or {"hostname": socket.gethostname(), "leukedge": __version__}
    now = datetime.now().timestamp() if now is None else now
    model_shas = sorted({f["model_sha256"] for f in fields if f.get("model_sha256")})
    model_rows = [("Model", f"{_e(slide.get('model') or 'unknown')}")]
    model_rows.append(("Model SHA-256", _sha(slide.get("model_sha256"))))
    if len(model_shas) > 1:
        model_rows.append(("Models of the fields", ", ".join(_sha(s) for s in model_shas)))
    info = _info_table(
        [
            ("Slide", f"<b>{_e(slide.get('id'))}</b>"),
            ("Operator", _e(slide.get("operator") or "not given")),
            ("Notes", _e(slide.get("notes") or "")),
            ("State", _e(slide.get("state") or "")),
            ("Started", _when(slide.get("started"))),
            ("Ended", _when(slide.get("ended")) or "still open"),
            ("Duration", _duration(slide.get("started"), slide.get("ended"))),
            *model_rows,
            ("Station", _e(station.get("hostname"))),
            ("leukedge version", _e(station.get("leukedge"))),
            ("Report made", _when(now)),
        ]
    )
    cards = "".join(_card(i, f, images) for i, f in enumerate(fields, 1))
    title = f"Slide {_e(slide.get('id'))}: leukedge report"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title><style>{_CSS}</style></head>
<body>
<h1>{title}</h1>
<div class="notice">{_e(NOTICE)}</div>
{_call_box(slide, tally)}
<h2>Slide and station</h2>
{info}
<h2>Counts</h2>
{_counts_table(fields)}
<h2>Flagged fields</h2>
{_flagged_table(fields)}
<section class="fields">
<h2>Fields</h2>
<p class="muted">Each field as taken, with the outline of the segmented blast cells in green;
flagged fields have a red frame.</p>
<div class="gallery">{cards}</div>
</section>
<footer>{_e(NOTICE)} Made by leukedge {_e(station.get("leukedge"))} on
{_e(station.get("hostname"))} at {_when(now)}.</footer>
</body></html>
"""


def _frame_image(field: dict[str, Any]) -> np.ndarray | None:
    """A logged field's kept image (its ``frame`` path), or None."""
    return read_field(field["frame"]) if field.get("frame") else None


def slide_report(log: ResultsLog, slide_id: str, **options: Any) -> str:
    """``render_report`` of a slide of a results log, its images read from the kept frames;
    an open slide shows its running call. ``KeyError`` if there is no such slide."""
    record = log.record(slide_id)
    slide, fields = record["slide"], record["fields"]
    tally = None if slide.get("call") else tally_from_rows(slide_id, fields).summary()
    return render_report(slide, fields, _frame_image, tally=tally, **options)
