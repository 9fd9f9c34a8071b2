// Charts: a thin configuration of uPlot (vendored; loaded as the global
// `uPlot` by index.html). No drawing code here: uPlot draws.

import { h } from "./dom.js";

const COLORS = ["#1f5fbf", "#b3541e", "#2e7d32", "#7b3fa0", "#a1257a", "#00707a", "#5d4037"];

/**
 * A time-series chart. `xs`: Unix seconds; `series`: [{label, values}].
 * The container carries the plotted points and the first series' total as
 * data attributes, and a text summary for screen readers.
 */
export function timeChart(title, xs, series, { yLabel = "", bars = false, additive = true } = {}) {
  const total = series.length ? series[0].values.reduce((a, b) => a + (b || 0), 0) : 0;
  const box = h("figure", {
    class: "chart",
    dataset: { points: String(xs.length), total: String(total) },
  });
  // A rate, a percentile, a distinct count or a sample does not add up over
  // hours: such series are summed up by their latest value and peak.
  const said = (s) => {
    const known = s.values.filter((v) => v !== null && v !== undefined);
    const peak = fmt(Math.max(0, ...known));
    return additive
      ? `${s.label} ${fmt(known.reduce((a, b) => a + b, 0))} in total, peak ${peak}`
      : `${s.label} latest ${known.length ? fmt(known[known.length - 1]) : "none"}, peak ${peak}`;
  };
  const summary = h("figcaption", {}, `${title}: ${series.map(said).join("; ")}.`);
  box.append(summary);
  if (!window.uPlot) {
    box.append(h("p", { class: "error" }, "The chart library did not load."));
    return box;
  }
  const width = Math.max(280, Math.min(960, (document.getElementById("main").clientWidth || 800) - 32));
  const opts = {
    title,
    width,
    height: 220,
    series: [
      {},
      ...series.map((s, i) => ({
        label: s.label,
        stroke: COLORS[i % COLORS.length],
        fill: bars || series.length === 1 ? `${COLORS[i % COLORS.length]}22` : undefined,
        width: 1.5,
        paths: bars && window.uPlot.paths && window.uPlot.paths.bars ? window.uPlot.paths.bars({ size: [0.8, 40] }) : undefined,
        // A series of a few samples (storage sampled once so far) shows its
        // points: a line needs two.
        points: { show: xs.length < 60 || s.values.filter((v) => v !== null && v !== undefined).length < 60 },
      })),
    ],
    axes: [{}, { label: yLabel, size: 60 }],
    scales: { x: { time: true } },
  };
  const plot = new window.uPlot(opts, [xs, ...series.map((s) => s.values)], box);
  plot.root.setAttribute("aria-hidden", "true");
  return box;
}

function fmt(n) {
  return Number.isInteger(n) ? String(n) : n.toFixed(2);
}

/** The start of each hour of the last `days` days, in Unix seconds. */
export function lastHours(days) {
  const end = Math.floor(Date.now() / 3600000) * 3600;
  const xs = [];
  for (let t = end - (days * 24 - 1) * 3600; t <= end; t += 3600) xs.push(t);
  return xs;
}
