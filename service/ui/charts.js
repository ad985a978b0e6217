// Charts drawn as inline SVG, no library: stacked bars, histograms, per-dimension ranges, line charts, a
// scatter plot and a layered graph. Each mark carries a class (bar, dim, line, node, edge) so that tests can count what was drawn.
"use strict";

const Charts = (() => {
  const SVG = "http://www.w3.org/2000/svg";
  const WIDTH = 560;
  const HEIGHT = 220;
  const MARGIN = { top: 12, right: 12, bottom: 34, left: 60 };
  const PALETTE = ["#3b6ea5", "#e08a2c", "#4f9a5a", "#b8474a", "#8062a8", "#8c6d4f", "#cf6fa6", "#6f7d8c"];

  function svg(tag, attributes = {}, ...children) {
    const element = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, String(value));
    for (const child of children) element.append(child);
    return element;
  }

  function text(x, y, content, attributes = {}) {
    return svg("text", { x, y, ...attributes }, String(content));
  }

  function title(content) {
    return svg("title", {}, String(content));
  }

  function format(value) {
    if (!Number.isFinite(value)) return String(value);
    const magnitude = Math.abs(value);
    if (magnitude !== 0 && (magnitude >= 1e5 || magnitude < 1e-3)) return value.toExponential(2);
    return Number(value.toPrecision(4)).toString();
  }

  // A linear map from [low, high] to [from, to]; a flat domain maps to the middle.
  function scale(low, high, from, to) {
    if (!(high > low)) return () => (from + to) / 2;
    return (value) => from + ((value - low) / (high - low)) * (to - from);
  }

  function frame(label, width = WIDTH, height = HEIGHT) {
    const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img", "aria-label": label });
    root.append(title(label));
    return root;
  }

  // Axis lines with the extremes of each domain written at their ends.
  function axes(root, [xLow, xHigh], [yLow, yHigh], width = WIDTH, height = HEIGHT) {
    const left = MARGIN.left, right = width - MARGIN.right, top = MARGIN.top, bottom = height - MARGIN.bottom;
    root.append(
      svg("line", { x1: left, y1: bottom, x2: right, y2: bottom, class: "axis" }),
      svg("line", { x1: left, y1: top, x2: left, y2: bottom, class: "axis" }),
      text(left - 6, bottom, format(yLow), { "text-anchor": "end", class: "tick" }),
      text(left - 6, top + 10, format(yHigh), { "text-anchor": "end", class: "tick" }),
    );
    if (xLow !== undefined) {
      root.append(
        text(left, bottom + 16, format(xLow), { "text-anchor": "start", class: "tick" }),
        text(right, bottom + 16, format(xHigh), { "text-anchor": "end", class: "tick" }),
      );
    }
  }

  function legend(names) {
    const box = document.createElement("div");
    box.className = "legend";
    names.forEach((name, index) => {
      const item = document.createElement("span");
      const swatch = document.createElement("i");
      swatch.style.background = PALETTE[index % PALETTE.length];
      item.append(swatch, name);
      box.append(item);
    });
    return box;
  }

  function figure(caption, ...content) {
    const wrapper = document.createElement("figure");
    const label = document.createElement("figcaption");
    label.textContent = caption;
    wrapper.append(label, ...content);
    return wrapper;
  }

  // Stacked bars: one column per category, one segment per series with a non-zero value there.
  function stackedBars(caption, categories, series) {
    const root = frame(caption);
    const totals = categories.map((_, column) => series.reduce((sum, item) => sum + (item.values[column] || 0), 0));
    const top = Math.max(1, ...totals);
    const y = scale(0, top, HEIGHT - MARGIN.bottom, MARGIN.top);
    const slot = (WIDTH - MARGIN.left - MARGIN.right) / Math.max(1, categories.length);
    const barWidth = Math.max(2, slot * 0.7);
    axes(root, [undefined, undefined], [0, top]);
    categories.forEach((category, column) => {
      const x = MARGIN.left + column * slot + (slot - barWidth) / 2;
      let base = 0;
      series.forEach((item, index) => {
        const value = item.values[column] || 0;
        if (value <= 0) return;
        const rect = svg("rect", {
          x, width: barWidth, y: y(base + value), height: y(base) - y(base + value),
          fill: PALETTE[index % PALETTE.length], class: "bar", "data-series": item.name, "data-category": category,
        });
        rect.append(title(`${category}: ${item.name} ${value}`));
        root.append(rect);
        base += value;
      });
      if (categories.length <= 30 || column % Math.ceil(categories.length / 30) === 0) {
        root.append(text(x + barWidth / 2, HEIGHT - MARGIN.bottom + 14, category, { "text-anchor": "middle", class: "tick" }));
      }
    });
    return figure(caption, root, legend(series.map((item) => item.name)));
  }

  // A histogram of commit-time bins: {low, width, counts}; one bar per bin, empty bins included.
  function histogram(caption, bins) {
    const root = frame(caption);
    const high = bins.low + bins.width * bins.counts.length;
    const top = Math.max(1, ...bins.counts);
    const x = scale(bins.low, high, MARGIN.left, WIDTH - MARGIN.right);
    const y = scale(0, top, HEIGHT - MARGIN.bottom, MARGIN.top);
    axes(root, [bins.low, high], [0, top]);
    bins.counts.forEach((count, index) => {
      const from = bins.low + index * bins.width;
      const rect = svg("rect", {
        x: x(from) + 0.5, width: Math.max(1, x(from + bins.width) - x(from) - 1), y: y(count), height: y(0) - y(count),
        class: "bar", fill: PALETTE[0], "data-count": count,
      });
      rect.append(title(`[${format(from)}, ${format(from + bins.width)}): ${count}`));
      root.append(rect);
    });
    return figure(caption, root);
  }

  // Per-dimension statistics: the min..max range as a line, mean ± std as a box, the mean as a dot.
  function dimensions(caption, stats) {
    const count = stats.mean.length;
    const root = frame(caption);
    const low = Math.min(...stats.min), high = Math.max(...stats.max);
    const y = scale(low, high, HEIGHT - MARGIN.bottom, MARGIN.top);
    const slot = (WIDTH - MARGIN.left - MARGIN.right) / Math.max(1, count);
    axes(root, [undefined, undefined], [low, high]);
    for (let d = 0; d < count; d++) {
      const centre = MARGIN.left + (d + 0.5) * slot;
      const half = Math.max(1.5, Math.min(14, slot * 0.3));
      const group = svg("g", { class: "dim", "data-dimension": d });
      group.append(
        title(`dimension ${d}: mean ${format(stats.mean[d])}, std ${format(stats.std[d])}, min ${format(stats.min[d])}, max ${format(stats.max[d])}`),
        svg("line", { x1: centre, x2: centre, y1: y(stats.min[d]), y2: y(stats.max[d]), class: "range" }),
        svg("rect", {
          x: centre - half, width: 2 * half, y: y(stats.mean[d] + stats.std[d]),
          height: Math.max(1, y(stats.mean[d] - stats.std[d]) - y(stats.mean[d] + stats.std[d])), class: "spread",
        }),
        svg("circle", { cx: centre, cy: y(stats.mean[d]), r: 2.5, class: "mean" }),
      );
      if (count <= 30) group.append(text(centre, HEIGHT - MARGIN.bottom + 14, d, { "text-anchor": "middle", class: "tick" }));
      root.append(group);
    }
    return figure(caption, root);
  }

  // One line per series of [x, y] points; `data-points` says how many points each line holds. With `dots`,
  // each point is also marked (for a few points, such as the episodes of an evaluation).
  function lines(caption, series, { dots = false } = {}) {
    const root = frame(caption);
    const all = series.flatMap((item) => item.points);
    const xs = all.map((point) => point[0]), ys = all.map((point) => point[1]);
    const xLow = Math.min(...xs), xHigh = Math.max(...xs), yLow = Math.min(...ys), yHigh = Math.max(...ys);
    const x = scale(xLow, xHigh, MARGIN.left, WIDTH - MARGIN.right);
    const y = scale(yLow, yHigh, HEIGHT - MARGIN.bottom, MARGIN.top);
    if (all.length) axes(root, [xLow, xHigh], [yLow, yHigh]);
    series.forEach((item, index) => {
      const points = item.points.map(([px, py]) => `${x(px).toFixed(1)},${y(py).toFixed(1)}`).join(" ");
      const line = svg("polyline", {
        points, class: "line", stroke: PALETTE[index % PALETTE.length], "data-series": item.name, "data-points": item.points.length,
      });
      line.append(title(item.name));
      root.append(line);
      if (!dots) return;
      for (const [px, py] of item.points) {
        const dot = svg("circle", { cx: x(px), cy: y(py), r: 3, fill: PALETTE[index % PALETTE.length], class: "point" });
        dot.append(title(`${item.name}: ${format(py)} at ${format(px)}`));
        root.append(dot);
      }
    });
    return figure(caption, root, series.length > 1 ? legend(series.map((item) => item.name)) : "");
  }

  // Points {x, y, label} as dots on two axes of their own.
  function scatter(caption, points, { xLabel, yLabel } = {}) {
    const root = frame(caption);
    const xs = points.map((p) => p.x), ys = points.map((p) => p.y);
    const xLow = Math.min(...xs), xHigh = Math.max(...xs), yLow = Math.min(...ys), yHigh = Math.max(...ys);
    const x = scale(xLow, xHigh, MARGIN.left, WIDTH - MARGIN.right);
    const y = scale(yLow, yHigh, HEIGHT - MARGIN.bottom, MARGIN.top);
    if (points.length) axes(root, [xLow, xHigh], [yLow, yHigh]);
    if (xLabel) root.append(text(WIDTH / 2, HEIGHT - 4, xLabel, { "text-anchor": "middle", class: "tick" }));
    if (yLabel) root.append(text(12, HEIGHT / 2, yLabel, { "text-anchor": "middle", class: "tick", transform: `rotate(-90 12 ${HEIGHT / 2})` }));
    for (const point of points) {
      const dot = svg("circle", { cx: x(point.x), cy: y(point.y), r: 4, fill: PALETTE[0], class: "point" });
      dot.append(title(`${point.label}: ${format(point.x)}, ${format(point.y)}`));
      root.append(dot);
    }
    return figure(caption, root);
  }

  // A layered graph: `layers` are columns of nodes {id, label, kind, href}; `edges` are [fromId, toId].
  function layered(caption, layers, edges) {
    const nodeWidth = 150, nodeHeight = 34, columnGap = 60, rowGap = 14;
    const rows = Math.max(1, ...layers.map((layer) => layer.length));
    const width = layers.length * nodeWidth + (layers.length - 1) * columnGap + 20;
    const height = rows * nodeHeight + (rows - 1) * rowGap + 20;
    const root = frame(caption, width, height);
    const place = new Map();
    layers.forEach((layer, column) => {
      const offset = (height - (layer.length * nodeHeight + (layer.length - 1) * rowGap)) / 2;
      layer.forEach((node, row) => place.set(node.id, { x: 10 + column * (nodeWidth + columnGap), y: offset + row * (nodeHeight + rowGap), node }));
    });
    for (const [from, to] of edges) {
      const a = place.get(from), b = place.get(to);
      if (!a || !b) continue;
      const x1 = a.x + nodeWidth, y1 = a.y + nodeHeight / 2, x2 = b.x, y2 = b.y + nodeHeight / 2, middle = (x1 + x2) / 2;
      root.append(svg("path", { d: `M${x1},${y1} C${middle},${y1} ${middle},${y2} ${x2},${y2}`, class: "edge", "data-from": from, "data-to": to }));
    }
    for (const { x, y, node } of place.values()) {
      const group = svg("g", { class: `node ${node.kind}`, "data-id": node.id, transform: `translate(${x},${y})` });
      group.append(
        title(node.title || node.label),
        svg("rect", { width: nodeWidth, height: nodeHeight, rx: 6 }),
        text(nodeWidth / 2, nodeHeight / 2 + 4, node.label.length > 22 ? node.label.slice(0, 21) + "…" : node.label, { "text-anchor": "middle" }),
      );
      if (node.href) {
        const link = svg("a", { href: node.href });
        link.append(group);
        root.append(link);
      } else {
        root.append(group);
      }
    }
    return figure(caption, root);
  }

  return { stackedBars, histogram, dimensions, lines, scatter, layered, format };
})();
