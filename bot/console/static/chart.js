/* qunbot console charts: small SVG line and bar charts, no dependencies.
 *
 *   QChart.line(container, {labels: ["2026-11-01", ...], series: [{name, values: [..], color}], title})
 *   QChart.bars(container, {labels, series, title, stacked: false})
 *
 * The SVG scales to its container's width (viewBox). Every point or bar has a <title> tooltip; the svg
 * carries data-points (how many values were drawn) and data-max (the largest), for tests and tools.
 */
(function () {
  "use strict";
  const NS = "http://www.w3.org/2000/svg";
  const W = 640, H = 240, LEFT = 44, RIGHT = 12, TOP = 12, BOTTOM = 30;
  const COLORS = ["#2f6fde", "#e0663a", "#2aa876", "#9b59b6", "#d4a72c"];

  function el(tag, attrs, parent) {
    const node = document.createElementNS(NS, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
    if (parent) parent.appendChild(node);
    return node;
  }

  // The top of the y axis: four equal steps of 1, 2, 2.5 or 5 × 10^k (whole steps for counts).
  function niceMax(value) {
    if (!(value > 0)) return 4;
    const raw = value / 4;
    const power = Math.pow(10, Math.floor(Math.log10(raw)));
    const n = raw / power;
    let step = (n <= 1 ? 1 : n <= 2 ? 2 : n <= 2.5 ? 2.5 : n <= 5 ? 5 : 10) * power;
    if (step < 1) step = 1;
    if (!Number.isInteger(step)) step = Math.ceil(step);
    return step * 4;
  }

  function shortDay(label) {
    const m = /^\d{4}-(\d{2})-(\d{2})$/.exec(label);
    return m ? m[1] + "-" + m[2] : label;
  }

  function legend(container, series) {
    const box = document.createElement("div");
    box.className = "chart-legend";
    series.forEach((s, i) => {
      const item = document.createElement("span");
      const swatch = document.createElement("i");
      swatch.style.background = s.color || COLORS[i % COLORS.length];
      item.appendChild(swatch);
      item.appendChild(document.createTextNode(s.name));
      box.appendChild(item);
    });
    container.appendChild(box);
  }

  // The axes, grid and labels; returns the scales.
  function frame(container, opts, maxValue) {
    container.textContent = "";
    const svg = el("svg", {viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img",
                           "aria-label": opts.title || "", preserveAspectRatio: "xMidYMid meet"});
    const plotW = W - LEFT - RIGHT, plotH = H - TOP - BOTTOM;
    const top = niceMax(maxValue);
    const n = opts.labels.length;
    const y = (v) => TOP + plotH - (v / top) * plotH;
    const slot = plotW / Math.max(n, 1);
    const x = (i) => LEFT + slot * (i + 0.5);
    for (let k = 0; k <= 4; k++) {
      const value = (top / 4) * k;
      const yy = y(value);
      el("line", {x1: LEFT, x2: W - RIGHT, y1: yy, y2: yy, class: k === 0 ? "axis" : "grid"}, svg);
      const label = el("text", {x: LEFT - 6, y: yy + 4, "text-anchor": "end", class: "tick"}, svg);
      label.textContent = Number.isInteger(value) ? String(value) : value.toFixed(1);
    }
    const every = Math.max(1, Math.ceil(n / 8));
    opts.labels.forEach((label, i) => {
      if ((n - 1 - i) % every !== 0) return;
      const text = el("text", {x: x(i), y: H - 10, "text-anchor": "middle", class: "tick"}, svg);
      text.textContent = shortDay(label);
    });
    container.appendChild(svg);
    return {svg, x, y, slot, top};
  }

  function line(container, opts) {
    const all = opts.series.flatMap((s) => s.values);
    const max = Math.max(0, ...all);
    const f = frame(container, opts, max);
    let points = 0;
    opts.series.forEach((s, si) => {
      const color = s.color || COLORS[si % COLORS.length];
      const d = s.values.map((v, i) => `${i ? "L" : "M"}${f.x(i).toFixed(1)},${f.y(v).toFixed(1)}`).join(" ");
      el("path", {d, fill: "none", stroke: color, "stroke-width": 2.2, class: "series",
                  "data-name": s.name}, f.svg);
      s.values.forEach((v, i) => {
        const dot = el("circle", {cx: f.x(i), cy: f.y(v), r: v ? 3 : 1.5, fill: color, class: "point"}, f.svg);
        el("title", {}, dot).textContent = `${opts.labels[i]} ${s.name}：${v}`;
        points += 1;
      });
    });
    f.svg.setAttribute("data-points", points);
    f.svg.setAttribute("data-max", max);
    legend(container, opts.series);
    return f.svg;
  }

  function bars(container, opts) {
    const stacked = !!opts.stacked;
    const totals = opts.labels.map((_, i) => opts.series.reduce((sum, s) => sum + (s.values[i] || 0), 0));
    const max = stacked ? Math.max(0, ...totals) : Math.max(0, ...opts.series.flatMap((s) => s.values));
    const f = frame(container, opts, max);
    const groups = stacked ? 1 : opts.series.length;
    const width = Math.max(2, (f.slot * 0.7) / groups);
    let points = 0;
    opts.labels.forEach((label, i) => {
      let base = 0;
      opts.series.forEach((s, si) => {
        const v = s.values[i] || 0;
        const color = s.color || COLORS[si % COLORS.length];
        const left = stacked ? f.x(i) - width / 2 : f.x(i) - (width * groups) / 2 + width * si;
        const yTop = f.y(base + v), yBottom = f.y(base);
        const rect = el("rect", {x: left.toFixed(1), y: yTop.toFixed(1), width: width.toFixed(1),
                                 height: Math.max(0, yBottom - yTop).toFixed(1), fill: color, class: "bar",
                                 "data-name": s.name}, f.svg);
        el("title", {}, rect).textContent = `${label} ${s.name}：${v}`;
        if (stacked) base += v;
        points += 1;
      });
    });
    f.svg.setAttribute("data-points", points);
    f.svg.setAttribute("data-max", max);
    legend(container, opts.series);
    return f.svg;
  }

  window.QChart = {line, bars, COLORS};
})();
