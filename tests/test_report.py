"""The slide report: self-contained (no request of any kind), every field, everything escaped."""

from __future__ import annotations

import re
import time

import numpy as np

from leukedge.edge.report import render_report, slide_report
from leukedge.edge.results_log import ResultsLog
from leukedge.edge.slide import NOTICE
from leukedge.edge.synth import synth_field

HOSTILE = '<script>alert("x")</script>'


def _fields(n: int = 6) -> tuple[list[dict], dict[int, np.ndarray]]:
    fields, images = [], {}
    for i in range(n):
        error = "truncated image" if i == n - 1 else None
        fields.append(
            {
                "id": i + 1,
                "source_id": f'/scans/S-1/"><img src=x onerror=alert(1)>-{i}.png',
                "time": 1_700_000_000.0 + i,
                "label": None if error else "Pre",
                "confidence": None if error else 0.9,
                "uncertain": None if error else i == 2,
                "reasons": ["low-confidence", HOSTILE] if i == 2 else [],
                "error": error,
                "model_sha256": "ab" * 32,
            }
        )
        images[i + 1] = None if i == 1 else synth_field("Pre", size=(48, 64), seed=i)[0]
    return fields, images


def _slide(**kw) -> dict:
    return {
        "id": "S-1",
        "state": "ended",
        "started": 1_700_000_000.0,
        "ended": 1_700_000_300.0,
        "operator": HOSTILE,
        "notes": "a & b",
        "model": "m",
        "model_sha256": "ab" * 32,
        "call": {"label": None, "text": "refer to a haematologist", "refer": True},
        **kw,
    }


def test_report_is_self_contained_escaped_and_lists_every_field():
    fields, images = _fields()
    html = render_report(_slide(id=f"S-1{HOSTILE}"), fields, images)
    assert not re.search(r"https?://", html)
    assert "<script" not in html.lower() and "<link" not in html.lower()
    assert '"><img src=x' not in html and "&quot;&gt;&lt;img src=x" in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    assert "a &amp; b" in html
    srcs = re.findall(r'<img [^>]*src="([^"]*)"', html)
    assert len(srcs) == 5 and all(s.startswith("data:image/jpeg;base64,") for s in srcs)
    for i in range(1, len(fields) + 1):
        assert f"#{i} " in html
    assert "image not kept" in html and "truncated image" in html
    assert NOTICE in html and "refer to a haematologist" in html
    assert "abababababab" in html and ("ab" * 32) not in html  # a SHA-256 prefix only
    assert "size: A4" in html and "break-inside: avoid" in html


def test_slide_report_of_a_results_log(tmp_path):
    rgb = synth_field("Pro", size=(60, 80), seed=1)[0]
    frame = tmp_path / "f.png"
    import cv2

    cv2.imwrite(str(frame), rgb[..., ::-1])
    with ResultsLog(tmp_path / "r") as log:
        log.start_slide("S-7", model="m", model_sha256="cd" * 32, operator="Ann")
        for i in range(3):
            log.log_result(
                "S-7",
                {
                    "source_id": f"cam#{i}",
                    "image_sha256": f"{i:064x}",
                    "label": "Pro",
                    "probabilities": {"Pro": 0.95, "Pre": 0.05},
                    "time": time.time(),
                    "frame": str(frame) if i else None,
                },
            )
        html = slide_report(log, "S-7")
    assert "Running call" in html and "Ann" in html
    assert html.count('src="data:image/jpeg') == 2 and "#3 Pro" in html


def test_results_report_cli(tmp_path):
    from typer.testing import CliRunner

    from leukedge.cli import app

    with ResultsLog(tmp_path / "r") as log:
        log.start_slide("S-9", model="m", model_sha256="ef" * 32)
        log.log_result(
            "S-9", {"source_id": "a.png", "image_sha256": "1" * 64, "label": "Pre",
                    "probabilities": {"Pre": 0.9, "Pro": 0.1}},
        )  # fmt: skip
    out = tmp_path / "reports" / "S-9.html"
    args = ["results", "report", "S-9", "--out", str(out), "--dir", str(tmp_path / "r")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "S-9" in out.read_text() and "#1 Pre" in out.read_text()
    missing = CliRunner().invoke(app, [*args[:2], "S-10", *args[3:]])
    assert missing.exit_code == 2 and "no slide 'S-10'" in missing.output
