"""Hand-written SVG: latency percentile curves per configuration.

One panel per (load mode, workload); x is the percentile on a "nines" scale
(50, 75, 90, 95, 99, 99.9), y the end-to-end latency in ms; one line per
configuration.
"""

import math
from xml.sax.saxutils import escape

COLORS = ["#222222", "#1f77b4", "#2ca02c", "#ff7f0e", "#d62728", "#9467bd"]
PCTS = ["50", "75", "90", "95", "99", "99.9"]


def _x(p):
    return -math.log10(1 - float(p) / 100.0)


def _nice_ticks(lo, hi, n=5):
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=raw)
    start = math.floor(lo / step) * step
    ticks = []
    t = start
    while t <= hi + step * 0.5:
        ticks.append(round(t, 6))
        t += step
    return ticks


def render(panels, configs, title, subtitle=""):
    """panels: list of rows; each row a list of (panel title, {config: {pct: ms}})."""
    pw, ph = 300, 220
    ml, mr, mt, mb = 52, 12, 28, 36
    cols = max(len(r) for r in panels)
    legend_h = 24 + 16 * ((len(configs) + 2) // 3)
    width = cols * (pw + ml + mr) + 20
    height = 60 + len(panels) * (ph + mt + mb) + legend_h
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="10" y="22" font-size="15" font-weight="bold">{escape(title)}</text>',
        f'<text x="10" y="40" fill="#555">{escape(subtitle)}</text>',
    ]
    xs = [_x(p) for p in PCTS]
    x0, x1 = min(xs), max(xs)
    for r, row in enumerate(panels):
        for c, (ptitle, series) in enumerate(row):
            ox = 10 + c * (pw + ml + mr) + ml
            oy = 60 + r * (ph + mt + mb) + mt
            vals = [v for s in series.values() for v in s.values() if v is not None]
            out.append(f'<text x="{ox}" y="{oy - 8}" font-weight="bold">{escape(ptitle)}</text>')
            out.append(f'<rect x="{ox}" y="{oy}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>')
            if not vals:
                out.append(f'<text x="{ox + 10}" y="{oy + ph / 2}" fill="#999">no data</text>')
                continue
            ticks = _nice_ticks(min(vals), max(vals))
            y0, y1 = ticks[0], ticks[-1]

            def sx(v):
                return ox + (v - x0) / (x1 - x0) * pw

            def sy(v):
                return oy + ph - (v - y0) / ((y1 - y0) or 1) * ph

            for t in ticks:
                y = sy(t)
                out.append(f'<line x1="{ox}" x2="{ox + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
                out.append(f'<text x="{ox - 4}" y="{y + 4:.1f}" text-anchor="end">{t:g}</text>')
            for p in PCTS:
                x = sx(_x(p))
                out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{oy}" y2="{oy + ph}" stroke="#eee"/>')
                out.append(f'<text x="{x:.1f}" y="{oy + ph + 14}" text-anchor="middle">p{p}</text>')
            out.append(
                f'<text x="{ox - 40}" y="{oy + ph / 2}" transform="rotate(-90 {ox - 40} {oy + ph / 2})" '
                f'text-anchor="middle" fill="#555">ms</text>'
            )
            for i, name in enumerate(configs):
                s = series.get(name)
                if not s:
                    continue
                pts = [(sx(_x(p)), sy(s[p])) for p in PCTS if s.get(p) is not None]
                if not pts:
                    continue
                color = COLORS[i % len(COLORS)]
                path = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
                out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="1.6"/>')
                for x, y in pts:
                    out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.2" fill="{color}"/>')
    ly = 60 + len(panels) * (ph + mt + mb) + 10
    for i, name in enumerate(configs):
        lx = 10 + (i % 3) * 380
        y = ly + (i // 3) * 16
        color = COLORS[i % len(COLORS)]
        out.append(f'<line x1="{lx}" x2="{lx + 22}" y1="{y}" y2="{y}" stroke="{color}" stroke-width="2.5"/>')
        out.append(f'<text x="{lx + 28}" y="{y + 4}">{escape(name)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
