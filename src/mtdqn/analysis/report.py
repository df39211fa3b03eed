"""``report.html``: one self-contained page (no network, no CDN) with the figures, the metrics and an
interactive embedding that shows each state's rendered frame, task and value on hover."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np

from mtdqn.analysis.metrics import MEANINGS
from mtdqn.analysis.render import SpriteSheet
from mtdqn.analysis.rollout import StateSet
from mtdqn.runlog import atomic_write_bytes


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _palette(name: str, n: int = 64) -> list[str]:
    import matplotlib

    cmap = matplotlib.colormaps[name]
    return [matplotlib.colors.to_hex(cmap(i / (n - 1))) for i in range(n)]


def _task_colours(n: int) -> list[str]:
    import matplotlib

    from mtdqn.analysis.figures import task_colour

    return [matplotlib.colors.to_hex(task_colour(t)) for t in range(n)]


def _signed(value: float | None) -> str:
    """A matrix entry; ``None`` (JSON's stand-in for NaN: undefined) as a dash."""
    return "&ndash;" if value is None else f"{value:+.2f}"


def _fmt(value) -> str:
    if value is None:
        return "&ndash;"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list) and value and isinstance(value[0], list):
        return "<br>".join(" ".join(_signed(v) for v in row) for row in value)
    if isinstance(value, list):
        return ", ".join(_fmt(v) for v in value)
    if isinstance(value, dict):
        return "<br>".join(f"{html.escape(str(k))}: {_fmt(v)}" for k, v in value.items())
    return html.escape(str(value))


def metrics_table(metrics: dict, task_names: list[str]) -> str:
    """HTML rows ``metric | value | meaning``."""
    rows = []
    for key, value in metrics.items():
        meaning = MEANINGS.get(key, "")
        if key in ("effective_rank_per_task",):
            value = dict(zip(task_names, value, strict=True))
        cell = _fmt(value)
        if key == "value_r2_cross":  # a small matrix: fitted on the column's task, tested on the row's
            head = "".join(f"<th>{html.escape(n)}</th>" for n in task_names)
            body = "".join(
                f"<tr><th>{html.escape(n)}</th>" + "".join(f"<td>{_signed(v)}</td>" for v in row) + "</tr>"
                for n, row in zip(task_names, value, strict=True)
            )
            cell = f"<table><tr><th>tested on \\ fitted on</th>{head}</tr>{body}</table>"
        rows.append(
            f"<tr><td><code>{html.escape(key)}</code></td><td>{cell}</td><td>{html.escape(meaning)}</td></tr>"
        )
    return "\n".join(rows)


def write_report(
    path: Path,
    title: str,
    states: StateSet,
    embedding: np.ndarray,
    sheets: list[SpriteSheet],
    metrics: dict,
    figures: list[Path],
    overlap_figures: list[Path],
    settings: dict,
) -> Path:
    """Write the page; figures are embedded as data URIs so the file works offline on its own."""
    sheet_of = np.zeros(len(states.task), dtype=np.int64)
    tile_of = np.zeros(len(states.task), dtype=np.int64)
    for k, sheet in enumerate(sheets):
        sheet_of[sheet.rows] = k
        tile_of[sheet.rows] = np.arange(len(sheet.rows))
    value = states.value
    data = {
        "x": np.round(embedding[:, 0], 3).tolist(),
        "y": np.round(embedding[:, 1], 3).tolist(),
        "task": states.task.astype(int).tolist(),
        "v": np.round(value.astype(float), 4).tolist(),
        "episode": states.episode.astype(int).tolist(),
        "step": states.step.astype(int).tolist(),
        "sheet": sheet_of.tolist(),
        "tile": tile_of.tolist(),
        "names": states.task_names,
        "colours": _task_colours(states.n_tasks),
        "viridis": _palette("viridis"),
        "sheets": [
            {
                "src": "data:image/png;base64," + _b64(s.png),
                "w": s.tile_width,
                "h": s.tile_height,
                "cols": s.columns,
            }
            for s in sheets
        ],
    }
    images = "\n".join(
        f'<figure><img alt="{html.escape(p.stem)}" src="data:image/png;base64,{_b64(p.read_bytes())}">'
        f"<figcaption>{html.escape(p.name)}</figcaption></figure>"
        for p in figures
    )
    overlaps = (
        "\n".join(
            f'<figure><img alt="{html.escape(p.stem)}" src="data:image/png;base64,{_b64(p.read_bytes())}">'
            f"<figcaption>{html.escape(p.name)}</figcaption></figure>"
            for p in overlap_figures
        )
        or "<p>No state has a neighbour from another task in shared-feature space.</p>"
    )
    page = (
        _TEMPLATE.replace("__TITLE__", html.escape(title))
        .replace("__SETTINGS__", html.escape(json.dumps(settings, indent=1)))
        .replace("__METRICS__", metrics_table(metrics, states.task_names))
        .replace("__FIGURES__", images)
        .replace("__OVERLAPS__", overlaps)
        .replace("__DATA__", json.dumps(data, separators=(",", ":")).replace("</", "<\\/"))
    )
    atomic_write_bytes(path, page.encode("utf-8"))
    return path


_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>__TITLE__</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; }
td, th { border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; }
figure { display: inline-block; margin: 0.5em; }
figure img { max-width: 100%; }
figcaption { font-size: 0.8em; color: #666; }
#plot-wrap { position: relative; display: inline-block; }
#embedding { border: 1px solid #bbb; cursor: crosshair; }
#tooltip { position: absolute; display: none; pointer-events: none; background: #fff; border: 1px solid #888;
  padding: 6px; font-size: 0.85em; box-shadow: 2px 2px 6px rgba(0,0,0,0.2); }
#legend span { display: inline-block; margin-right: 1em; }
#legend i { display: inline-block; width: 10px; height: 10px; margin-right: 4px; }
pre { background: #f6f6f6; padding: 0.5em; font-size: 0.8em; }
</style>
</head>
<body>
<h1>__TITLE__</h1>
<h2>Interactive embedding</h2>
<p>Hover over a point to see the state's frame (rendered from the environment's internal state), its task
and its value V = max<sub>a</sub> Q(s, a).
Colour: <label><input type="radio" name="colour" value="task" checked> by task</label>
<label><input type="radio" name="colour" value="value"> by value (scaled within each task)</label></p>
<div id="legend"></div>
<div id="plot-wrap"><canvas id="embedding" width="900" height="700"></canvas>
<div id="tooltip"><canvas id="thumb" width="10" height="10"></canvas><div id="tip-text"></div></div></div>
<h2>Sharing metrics</h2>
<table><tr><th>metric</th><th>value</th><th>meaning</th></tr>
__METRICS__
</table>
<h2>Figures</h2>
__FIGURES__
<h2>Where tasks overlap</h2>
__OVERLAPS__
<h2>Settings</h2>
<pre>__SETTINGS__</pre>
<script>
"use strict";
const D = __DATA__;
const canvas = document.getElementById("embedding");
const ctx = canvas.getContext("2d");
const tip = document.getElementById("tooltip");
const thumb = document.getElementById("thumb");
const tipText = document.getElementById("tip-text");
const n = D.x.length;
const pad = 20;
let xmin = Infinity, xmax = -Infinity, ymin = Infinity, ymax = -Infinity;
for (let i = 0; i < n; i++) {
  xmin = Math.min(xmin, D.x[i]); xmax = Math.max(xmax, D.x[i]);
  ymin = Math.min(ymin, D.y[i]); ymax = Math.max(ymax, D.y[i]);
}
const scale = Math.min((canvas.width - 2 * pad) / (xmax - xmin || 1),
                       (canvas.height - 2 * pad) / (ymax - ymin || 1));
const px = new Float64Array(n), py = new Float64Array(n);
const ox = (canvas.width - (xmax - xmin) * scale) / 2, oy = (canvas.height - (ymax - ymin) * scale) / 2;
for (let i = 0; i < n; i++) {
  px[i] = ox + (D.x[i] - xmin) * scale;
  py[i] = canvas.height - oy - (D.y[i] - ymin) * scale;
}
const vmin = D.names.map(() => Infinity), vmax = D.names.map(() => -Infinity);
for (let i = 0; i < n; i++) {
  const t = D.task[i];
  vmin[t] = Math.min(vmin[t], D.v[i]); vmax[t] = Math.max(vmax[t], D.v[i]);
}
function colour(i, mode) {
  if (mode === "task") return D.colours[D.task[i]];
  const t = D.task[i];
  const f = vmax[t] > vmin[t] ? (D.v[i] - vmin[t]) / (vmax[t] - vmin[t]) : 0.5;
  return D.viridis[Math.round(f * (D.viridis.length - 1))];
}
let drawn = 0;
function draw() {
  const mode = document.querySelector("input[name=colour]:checked").value;
  ctx.fillStyle = "#ffffff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.globalAlpha = 0.7;
  drawn = 0;
  for (let i = 0; i < n; i++) {
    ctx.fillStyle = colour(i, mode);
    ctx.fillRect(px[i] - 2, py[i] - 2, 4, 4);
    drawn++;
  }
  ctx.globalAlpha = 1.0;
  canvas.dataset.pointsDrawn = String(drawn);
}
document.getElementById("legend").innerHTML = D.names.map(
  (name, t) => `<span><i style="background:${D.colours[t]}"></i>${name}</span>`).join("");
const sheets = D.sheets.map((s) => { const img = new Image(); img.src = s.src; return img; });
function nearest(mx, my) {
  let best = -1, bestD = 64;
  for (let i = 0; i < n; i++) {
    const d = (px[i] - mx) ** 2 + (py[i] - my) ** 2;
    if (d < bestD) { bestD = d; best = i; }
  }
  return best;
}
function show(i, mx, my) {
  if (i < 0) { tip.style.display = "none"; return; }
  const t = D.task[i], s = D.sheets[D.sheet[i]], k = D.tile[i];
  thumb.width = s.w; thumb.height = s.h;
  const tctx = thumb.getContext("2d");
  const sx = (k % s.cols) * s.w, sy = Math.floor(k / s.cols) * s.h;
  tctx.drawImage(sheets[D.sheet[i]], sx, sy, s.w, s.h, 0, 0, s.w, s.h);
  tipText.innerHTML = `<b style="color:${D.colours[t]}">${D.names[t]}</b><br>V = ${D.v[i].toFixed(3)}` +
    `<br>episode ${D.episode[i]}, step ${D.step[i]}<br>state #${i}`;
  tip.style.left = (mx + 14) + "px"; tip.style.top = (my + 14) + "px";
  tip.style.display = "block";
  tip.dataset.row = String(i);
}
canvas.addEventListener("mousemove", (e) => {
  const r = canvas.getBoundingClientRect();
  const mx = e.clientX - r.left, my = e.clientY - r.top;
  show(nearest(mx, my), mx, my);
});
canvas.addEventListener("mouseleave", () => { tip.style.display = "none"; });
document.querySelectorAll("input[name=colour]").forEach((el) => el.addEventListener("change", draw));
draw();
Promise.all(sheets.map((img) => img.decode())).then(() => { document.body.dataset.ready = "1"; });
window.mtdqnPoint = (i) => ({ x: px[i], y: py[i] });
</script>
</body>
</html>
"""
