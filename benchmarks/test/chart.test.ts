import { XMLParser, XMLValidator } from "fast-xml-parser";
import { describe, expect, it } from "vitest";
import { escapeXml, lineChart, niceTicks } from "../src/chart";

const parser = new XMLParser({ ignoreAttributes: false, attributeNamePrefix: "" });

describe("lineChart", () => {
  const svg = lineChart({
    title: "bsrLinear <M=8192> & friends",
    xLabel: "density",
    yLabel: "ms",
    series: [
      { name: "block 32", points: [[1, 10], [0.5, 5.2], [0.25, 2.9], [0.1, 1.4]] },
      { name: "block 64", points: [[0.1, 1.1], [1, 9]] },
    ],
    references: [{ name: "dense x·Wᵀ", y: 9.5 }],
  });

  it("writes a well-formed SVG document", () => {
    expect(XMLValidator.validate(svg)).toBe(true);
    const doc = parser.parse(svg);
    expect(doc.svg.xmlns).toBe("http://www.w3.org/2000/svg");
    expect(doc.svg.title).toBe("bsrLinear <M=8192> & friends");
  });

  it("draws one line per series through every point, left to right, and a dashed reference line", () => {
    const doc = parser.parse(svg);
    const paths = [doc.svg.path].flat();
    expect(paths).toHaveLength(2);
    const xs = (paths[0].d as string).split(" ").map((step) => Number(step.slice(1).split(",")[0]));
    expect(xs).toHaveLength(4);
    expect([...xs].sort((a, b) => a - b)).toEqual(xs);
    expect([doc.svg.circle].flat()).toHaveLength(6);
    const dashed = [doc.svg.line].flat().filter((line: Record<string, string>) => line["stroke-dasharray"] !== undefined);
    // the reference line itself and its legend swatch
    expect(dashed).toHaveLength(2);
    const legend = [doc.svg.text].flat().map((t: unknown) => (typeof t === "object" && t !== null ? (t as Record<string, unknown>)["#text"] : t));
    expect(legend).toEqual(expect.arrayContaining(["block 32", "block 64", "dense x·Wᵀ"]));
  });

  it("places a larger value higher on the page", () => {
    const doc = parser.parse(lineChart({ title: "t", xLabel: "x", yLabel: "y", series: [{ name: "s", points: [[0, 1], [1, 3]] }] }));
    const [first, second] = [doc.svg.circle].flat().map((c: Record<string, string>) => Number(c.cy));
    expect(second).toBeLessThan(first);
  });

  it("keeps every point inside the plot area when the largest value is not a round number", () => {
    const doc = parser.parse(lineChart({ title: "t", xLabel: "x", yLabel: "y", series: [{ name: "s", points: [[0.1, 8.5], [0.25, 37.3], [1, 0.2]] }], height: 340 }));
    const axes = [doc.svg.line].flat().filter((l: Record<string, string>) => l.stroke === "#000000" && l.x1 === l.x2 && Number(l.y2) - Number(l.y1) > 10);
    const [top, bottom] = [Number(axes[0].y1), Number(axes[0].y2)];
    for (const c of [doc.svg.circle].flat() as Array<Record<string, string>>) {
      expect(Number(c.cy)).toBeGreaterThanOrEqual(top);
      expect(Number(c.cy)).toBeLessThanOrEqual(bottom);
    }
  });

  it("refuses a point that is not finite", () => {
    expect(() => lineChart({ title: "t", xLabel: "x", yLabel: "y", series: [{ name: "s", points: [[0.5, Number.NaN]] }] })).toThrow(/not finite/);
  });

  it("refuses a reference line that is not finite (it drew at NaN, or threw from inside the tick maths)", () => {
    for (const y of [Number.NaN, Number.POSITIVE_INFINITY]) {
      expect(() => lineChart({ title: "t", xLabel: "x", yLabel: "y", series: [], references: [{ name: "dense", y }] })).toThrow(`reference line "dense" at ${y} is not finite`);
    }
  });

  it("refuses a width or height that is not finite or leaves no room for the plot inside the margins", () => {
    const chart = (size: { width?: number; height?: number }) => lineChart({ title: "t", xLabel: "x", yLabel: "y", series: [{ name: "s", points: [[0.5, 1]] }], ...size });
    for (const width of [Number.NaN, Number.POSITIVE_INFINITY, -560, 0, 214]) expect(() => chart({ width })).toThrow(`lineChart "t": width ${width} is not a finite size above 214`);
    for (const height of [Number.NaN, 0, 84]) expect(() => chart({ height })).toThrow(`lineChart "t": height ${height} is not a finite size above 84`);
    expect(chart({ width: 215, height: 85 })).toContain('width="215" height="85"');
  });

  it("labels exponent ticks with their own digits: 1.25e+9, not 1.3e+9", () => {
    const labels = (top: number) => {
      const text = new XMLParser({ ignoreAttributes: false, attributeNamePrefix: "", parseTagValue: false });
      const doc = text.parse(lineChart({ title: "t", xLabel: "x", yLabel: "y", series: [{ name: "s", points: [[0.5, top]] }] }));
      return [doc.svg.text].flat().filter((t: Record<string, string>) => t["text-anchor"] === "end").map((t: Record<string, string>) => String(t["#text"]));
    };
    expect(labels(1e9)).toEqual(["0", "2.5e+8", "5e+8", "7.5e+8", "1e+9", "1.25e+9"]);
    expect(labels(1e-9)).toEqual(["0", "2.5e-10", "5e-10", "7.5e-10", "1e-9", "1.25e-9"]);
  });
});

describe("helpers", () => {
  it("escapes the five XML specials", () => {
    expect(escapeXml(`<a & "b" 'c'>`)).toBe("&lt;a &amp; &quot;b&quot; &apos;c&apos;&gt;");
  });

  it("picks round ticks covering the range", () => {
    expect(niceTicks(0, 1)).toEqual([0, 0.2, 0.4, 0.6, 0.8, 1]);
    // A count that is no count of ticks: [NaN], [] or a billion ticks.
    for (const count of [0, -2, 1.5, Number.NaN, 1e9]) expect(() => niceTicks(0, 10, count)).toThrow(/niceTicks: count must be an integer from 1 to 100/);
    // Bounds whose difference overflows; bounds past 2^53 steps apart (the tick loop never ended).
    expect(niceTicks(-1e308, 1e308)).toEqual([-1e308, -5e307, 0, 5e307, 1e308]);
    expect(niceTicks(1e22, 1e22 + 4e6)).toEqual([1e22]);
    const ticks = niceTicks(0, 37);
    expect(ticks[0]).toBe(0);
    expect(ticks[ticks.length - 1]).toBeGreaterThanOrEqual(37);
  });
});
