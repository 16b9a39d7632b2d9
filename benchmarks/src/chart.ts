/** A small SVG line-chart writer: lines of points, horizontal reference lines, axes and a legend. */

export interface Series {
  name: string;
  points: Array<[number, number]>;
}

export interface ReferenceLine {
  name: string;
  y: number;
}

export interface LineChartOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  references?: ReferenceLine[];
  width?: number;
  height?: number;
}

const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"];
const REFERENCE_COLOR = "#555555";

/** Escapes text for XML content and attribute values. */
export function escapeXml(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;").replace(/'/g, "&apos;");
}

/** The most ticks an axis is given: past this a count is a mistake, not a chart (1e9 ticks ran out of memory). */
const MAX_TICKS = 100;

/** About `count` (1 to 100) round tick values, the first <= low and the last >= high. */
export function niceTicks(low: number, high: number, count = 5): number[] {
  if (!(Number.isFinite(low) && Number.isFinite(high))) throw new RangeError(`niceTicks: bounds must be finite, got ${low}, ${high}`);
  if (!(Number.isInteger(count) && count >= 1 && count <= MAX_TICKS)) throw new RangeError(`niceTicks: count must be an integer from 1 to ${MAX_TICKS}, got ${count}`);
  if (high <= low) return [low];
  // Each bound divided first: high - low overflows to Infinity for bounds near ±1.8e308 (a NaN tick).
  const raw = high / count - low / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((f) => f * magnitude).find((s) => s >= raw) ?? 10 * magnitude;
  const ticks: number[] = [];
  const first = Math.floor(low / step + 1e-9);
  const last = Math.ceil(high / step - 1e-9);
  // Counted from the first tick, not by i++ from `first`: past 2^53 (bounds of 1e22 a few units apart) i++ left i
  // where it was and the loop never ended. Ticks that round to the same value are given once.
  for (let j = 0; j <= last - first; j++) {
    const tick = Number((Math.abs(first) < 2 ** 52 ? (first + j) * step : first * step + j * step).toPrecision(12));
    if (ticks[ticks.length - 1] !== tick) ticks.push(tick);
  }
  return ticks;
}

function label(value: number): string {
  if (value === 0) return "0";
  const abs = Math.abs(value);
  // As many digits as the tick has (2.5e+8, 1.25e+9), not one: toExponential(1) printed the tick 1.25e9 as 1.3e+9.
  if (abs >= 1e4 || abs < 1e-3) return Number(value.toPrecision(4)).toExponential();
  return String(Number(value.toPrecision(4)));
}

function fmt(n: number): string {
  return n.toFixed(1);
}

const LEFT = 64;
const RIGHT = 150;
const TOP = 36;
const BOTTOM = 48;

/** The chart as a standalone SVG document. Throws on a non-finite point, or a width or height that leaves no plot. */
export function lineChart(options: LineChartOptions): string {
  const { title, xLabel, yLabel, series, references = [], width = 560, height = 340 } = options;
  const points = series.flatMap((s) => s.points);
  for (const [x, y] of points) {
    if (!Number.isFinite(x) || !Number.isFinite(y)) throw new RangeError(`lineChart "${title}": point (${x}, ${y}) is not finite`);
  }
  for (const ref of references) {
    if (!Number.isFinite(ref.y)) throw new RangeError(`lineChart "${title}": reference line "${ref.name}" at ${ref.y} is not finite`);
  }
  // The margins hold the axis labels and the legend: a size that leaves no plot drew it at negative or NaN coordinates.
  for (const [name, size, margins] of [["width", width, LEFT + RIGHT], ["height", height, TOP + BOTTOM]] as const) {
    if (!(Number.isFinite(size) && size > margins)) throw new RangeError(`lineChart "${title}": ${name} ${size} is not a finite size above ${margins} (the margins around the plot)`);
  }
  const xs = points.map((p) => p[0]);
  const ys = [...points.map((p) => p[1]), ...references.map((r) => r.y)];
  const xMin = xs.length ? Math.min(...xs) : 0;
  const xMax = xs.length ? Math.max(...xs) : 1;
  const yMax = ys.length ? Math.max(...ys) : 1;
  const xTicks = niceTicks(Math.min(0, xMin), xMax > xMin ? xMax : xMin + 1);
  const yTicks = niceTicks(0, yMax > 0 ? yMax * 1.05 : 1);
  const x0 = xTicks[0];
  const x1 = xTicks[xTicks.length - 1];
  const y1 = yTicks[yTicks.length - 1];
  const [left, top] = [LEFT, TOP];
  const plotW = width - LEFT - RIGHT;
  const plotH = height - TOP - BOTTOM;
  const px = (x: number) => left + ((x - x0) / (x1 - x0 || 1)) * plotW;
  const py = (y: number) => top + plotH - (y / (y1 || 1)) * plotH;

  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`);
  parts.push(`<title>${escapeXml(title)}</title>`);
  parts.push(`<rect width="${width}" height="${height}" fill="#ffffff"/>`);
  parts.push(`<text x="${width / 2}" y="20" text-anchor="middle" font-size="13" font-weight="bold">${escapeXml(title)}</text>`);
  for (const t of yTicks) {
    parts.push(`<line x1="${left}" y1="${fmt(py(t))}" x2="${left + plotW}" y2="${fmt(py(t))}" stroke="#e5e5e5"/>`);
    parts.push(`<text x="${left - 6}" y="${fmt(py(t) + 4)}" text-anchor="end">${escapeXml(label(t))}</text>`);
  }
  for (const t of xTicks) {
    parts.push(`<line x1="${fmt(px(t))}" y1="${top + plotH}" x2="${fmt(px(t))}" y2="${top + plotH + 4}" stroke="#000000"/>`);
    parts.push(`<text x="${fmt(px(t))}" y="${top + plotH + 16}" text-anchor="middle">${escapeXml(label(t))}</text>`);
  }
  parts.push(`<line x1="${left}" y1="${top + plotH}" x2="${left + plotW}" y2="${top + plotH}" stroke="#000000"/>`);
  parts.push(`<line x1="${left}" y1="${top}" x2="${left}" y2="${top + plotH}" stroke="#000000"/>`);
  parts.push(`<text x="${left + plotW / 2}" y="${height - 10}" text-anchor="middle">${escapeXml(xLabel)}</text>`);
  parts.push(`<text x="14" y="${top + plotH / 2}" text-anchor="middle" transform="rotate(-90 14 ${top + plotH / 2})">${escapeXml(yLabel)}</text>`);

  const legend: Array<{ name: string; color: string; dashed: boolean }> = [];
  references.forEach((ref) => {
    parts.push(`<line x1="${left}" y1="${fmt(py(ref.y))}" x2="${left + plotW}" y2="${fmt(py(ref.y))}" stroke="${REFERENCE_COLOR}" stroke-width="1.5" stroke-dasharray="6 4"/>`);
    legend.push({ name: ref.name, color: REFERENCE_COLOR, dashed: true });
  });
  series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    const sorted = [...s.points].sort((a, b) => a[0] - b[0]);
    if (sorted.length > 0) {
      const path = sorted.map(([x, y], j) => `${j === 0 ? "M" : "L"}${fmt(px(x))},${fmt(py(y))}`).join(" ");
      parts.push(`<path d="${path}" fill="none" stroke="${color}" stroke-width="2"/>`);
      for (const [x, y] of sorted) parts.push(`<circle cx="${fmt(px(x))}" cy="${fmt(py(y))}" r="3" fill="${color}"/>`);
    }
    legend.push({ name: s.name, color, dashed: false });
  });
  legend.forEach((entry, i) => {
    const y = top + 8 + i * 18;
    const x = left + plotW + 14;
    parts.push(`<line x1="${x}" y1="${y}" x2="${x + 22}" y2="${y}" stroke="${entry.color}" stroke-width="2"${entry.dashed ? ' stroke-dasharray="6 4"' : ""}/>`);
    parts.push(`<text x="${x + 28}" y="${y + 4}">${escapeXml(entry.name)}</text>`);
  });
  parts.push("</svg>");
  return `${parts.join("\n")}\n`;
}
