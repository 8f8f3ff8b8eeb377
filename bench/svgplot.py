"""Hand-written SVG: latency percentile curves per configuration (render),
and quantities sampled over time (render_time_series, for the soak).

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


def render_time_series(panels, title, subtitle="", cols=2, markers=()):
    """Hand-written SVG: one panel per quantity sampled over time.

    panels: list of dicts with `title`, `unit`, `series` ({name: [(x, y), ...]},
    x in minutes) and optionally `limit` (a y value drawn as a dashed red line,
    e.g. a check's threshold). markers: (x, label) drawn as vertical dotted
    lines in every panel (phase boundaries)."""
    pw, ph = 420, 190
    ml, mr, mt, mb = 60, 14, 30, 40
    rows = (len(panels) + cols - 1) // cols
    width = cols * (pw + ml + mr) + 20
    height = 60 + rows * (ph + mt + mb) + 10
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="10" y="22" font-size="15" font-weight="bold">{escape(title)}</text>',
        f'<text x="10" y="40" fill="#555">{escape(subtitle)}</text>',
    ]
    xs = [x for p in panels for s in p["series"].values() for x, _ in s] + [m[0] for m in markers]
    x0, x1 = (min(xs), max(xs)) if xs else (0, 1)
    xticks = _nice_ticks(x0, x1, 8)
    while xticks[-1] < x1:
        xticks.append(round(xticks[-1] + (xticks[1] - xticks[0]), 6))
    x0, x1 = xticks[0], xticks[-1]
    for n, panel in enumerate(panels):
        r, c = divmod(n, cols)
        ox = 10 + c * (pw + ml + mr) + ml
        oy = 60 + r * (ph + mt + mb) + mt
        out.append(f'<text x="{ox}" y="{oy - 8}" font-weight="bold">{escape(panel["title"])}</text>')
        out.append(f'<rect x="{ox}" y="{oy}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>')
        vals = [y for s in panel["series"].values() for _, y in s if y is not None]
        if panel.get("limit") is not None:
            vals.append(panel["limit"])
        if not vals:
            out.append(f'<text x="{ox + 10}" y="{oy + ph / 2}" fill="#999">no data</text>')
            continue
        # From zero, so that growth is seen at its true proportion.
        top = max(vals) * 1.05 or 1
        yticks = _nice_ticks(0, top)
        while yticks[-1] < top:
            yticks.append(round(yticks[-1] + (yticks[1] - yticks[0]), 6))
        y0, y1 = yticks[0], yticks[-1]

        def sx(v):
            return ox + (v - x0) / ((x1 - x0) or 1) * pw

        def sy(v):
            return oy + ph - (v - y0) / ((y1 - y0) or 1) * ph

        for t in yticks:
            y = sy(t)
            out.append(f'<line x1="{ox}" x2="{ox + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
            out.append(f'<text x="{ox - 4}" y="{y + 4:.1f}" text-anchor="end">{t:g}</text>')
        for t in xticks:
            x = sx(t)
            out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{oy}" y2="{oy + ph}" stroke="#eee"/>')
            out.append(f'<text x="{x:.1f}" y="{oy + ph + 14}" text-anchor="middle">{t:g}</text>')
        out.append(f'<text x="{ox + pw / 2}" y="{oy + ph + 30}" text-anchor="middle" fill="#555">minutes</text>')
        out.append(
            f'<text x="{ox - 46}" y="{oy + ph / 2}" transform="rotate(-90 {ox - 46} {oy + ph / 2})" '
            f'text-anchor="middle" fill="#555">{escape(panel["unit"])}</text>'
        )
        for mx, label in markers:
            x = sx(mx)
            out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{oy}" y2="{oy + ph}" stroke="#888" stroke-dasharray="2,3"/>')
            right = x > ox + pw * 0.75
            out.append(f'<text x="{x + (-3 if right else 3):.1f}" y="{oy + 11}" fill="#888" '
                       f'text-anchor="{"end" if right else "start"}">{escape(label)}</text>')
        if panel.get("limit") is not None:
            y = sy(panel["limit"])
            out.append(f'<line x1="{ox}" x2="{ox + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#d62728" stroke-dasharray="5,4"/>')
        lx = ox + pw  # the legend, right-aligned on the title's line
        for i, (name, pts) in reversed(list(enumerate(panel["series"].items()))):
            color = COLORS[(i + 1) % len(COLORS)]
            pts = [(sx(x), sy(y)) for x, y in pts if y is not None]
            if pts:
                path = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
                out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="1.5"/>')
            out.append(f'<text x="{lx}" y="{oy - 8}" text-anchor="end">{escape(name)}</text>')
            lx -= round(6.2 * len(name)) + 4
            out.append(f'<line x1="{lx - 16}" x2="{lx - 2}" y1="{oy - 12}" y2="{oy - 12}" '
                       f'stroke="{color}" stroke-width="2.5"/>')
            lx -= 28
    out.append("</svg>")
    return "\n".join(out) + "\n"
