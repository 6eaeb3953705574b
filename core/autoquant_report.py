"""AutoQuant's reports: ``autoquant_report.json`` (machine-readable) and ``autoquant_report.html``
(stages, score and time per stage, chosen settings, and an inline SVG bar chart — no JavaScript,
no external assets)."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

_BAR_W, _BAR_GAP, _CHART_H = 70, 20, 220


def _chart(stages: list[dict[str, Any]], fp32: float, target: float) -> str:
    scored = [s for s in stages if s.get("score") is not None]
    if not scored:
        return ""
    top = max([fp32, target, *(s["score"] for s in scored)])
    low = min([target, *(s["score"] for s in scored)])
    bottom = max(0.0, low - 0.1 * (top - low + 1e-9)) if low > 0 else low
    span = (top - bottom) or 1.0

    def y(v: float) -> float:
        return 10 + (_CHART_H - 40) * (1 - (v - bottom) / span)

    width = 60 + len(scored) * (_BAR_W + _BAR_GAP)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{_CHART_H}" role="img">']
    for i, s in enumerate(scored):
        x = 50 + i * (_BAR_W + _BAR_GAP)
        colour = "#2e7d32" if s["score"] >= target else "#c62828"
        parts.append(
            f'<rect x="{x}" y="{y(s["score"]):.1f}" width="{_BAR_W}" height="{y(bottom) - y(s["score"]):.1f}" '
            f'fill="{colour}"><title>{html.escape(s["name"])}: {s["score"]:.4f}</title></rect>'
        )
        parts.append(
            f'<text x="{x + _BAR_W / 2}" y="{_CHART_H - 12}" font-size="10" text-anchor="middle">'
            f"{html.escape(s['name'])}</text>"
        )
    for value, label, colour in ((fp32, "FP32", "#1565c0"), (target, "target", "#ef6c00")):
        parts.append(
            f'<line x1="40" x2="{width}" y1="{y(value):.1f}" y2="{y(value):.1f}" stroke="{colour}" '
            f'stroke-dasharray="4"/><text x="2" y="{y(value) + 4:.1f}" font-size="10">{label}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _pareto_chart(stages: list[dict[str, Any]]) -> str:
    """Score against relative BitOps of the mixed-precision stage's accepted raises (AIMET's pareto curve)."""
    points = next(
        (s.get("details", {}).get("pareto") for s in stages if s["name"] == "mixed_precision"), None
    )
    if not points:
        return ""
    w, h, pad = 420, 240, 40
    xs, ys = [p["relative_bitops"] for p in points], [p["score"] for p in points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)

    def px(v: float) -> float:
        return pad + (w - 2 * pad) * ((v - x0) / ((x1 - x0) or 1.0))

    def py(v: float) -> float:
        return h - pad - (h - 2 * pad) * ((v - y0) / ((y1 - y0) or 1.0))

    line = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs, ys, strict=True))
    dots = "".join(
        f'<circle cx="{px(p["relative_bitops"]):.1f}" cy="{py(p["score"]):.1f}" r="3" fill="#1565c0">'
        f"<title>{html.escape(str(p['raised'] or 'start'))}: {p['score']:.4f} at "
        f"{p['relative_bitops']:.3f}</title></circle>"
        for p in points
    )
    return (
        f'<h2>Mixed precision: Pareto curve</h2><svg xmlns="http://www.w3.org/2000/svg" width="{w}" '
        f'height="{h}" role="img"><polyline points="{line}" fill="none" stroke="#1565c0"/>{dots}'
        f'<text x="{w / 2}" y="{h - 8}" font-size="10" text-anchor="middle">relative BitOps '
        f'({x0:.3f}–{x1:.3f})</text><text x="2" y="12" font-size="10">score ({y0:.4f}–{y1:.4f})</text></svg>'
    )


def _fmt(score: float | None) -> str:
    return "" if score is None else f"{score:.4f}"


def write_reports(out_dir: str | Path, report: dict[str, Any]) -> tuple[Path, Path]:
    """Write both reports into ``out_dir``; returns (json path, html path)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "autoquant_report.json"
    json_path.write_text(json.dumps(report, indent=1, default=str))
    rows = "".join(
        "<tr>"
        f"<td>{html.escape(s['name'])}</td>"
        f"<td>{_fmt(s.get('score'))}</td>"
        f"<td>{html.escape(s['status'])}</td>"
        f"<td>{s['seconds']:.2f}</td>"
        f"<td>{'yes' if s.get('cached') else ''}</td>"
        f"<td><code>{html.escape(json.dumps(s.get('details', {}), default=str))}</code></td>"
        "</tr>"
        for s in report["stages"]
    )
    settings = html.escape(json.dumps(report["settings"], indent=1, default=str))
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>lowbit AutoQuant report</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}}code{{font-size:11px}}</style>
</head><body>
<h1>AutoQuant</h1>
<p><b>{html.escape(report["message"])}</b></p>
<p>FP32 score {report["fp32_score"]:.4f}; target {report["target"]:.4f} (allowed drop {report["allowed_accuracy_drop"]});
metric: {html.escape(report["metric"])}; total time {report["seconds"]:.1f} s.</p>
{_chart(report["stages"], report["fp32_score"], report["target"])}
{_pareto_chart(report["stages"])}
<h2>Stages</h2>
<table><tr><th>stage</th><th>score</th><th>status</th><th>seconds</th><th>from cache</th><th>details</th></tr>
{rows}</table>
<h2>Settings</h2><pre>{settings}</pre>
</body></html>
"""
    html_path = out / "autoquant_report.html"
    html_path.write_text(page)
    return json_path, html_path
