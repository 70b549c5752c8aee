// Apache ECharts in React: one small wrapper (init once, resize with the box, replace the
// option on every snapshot) and the option builders for the dashboard's line charts.

import { LineChart } from "echarts/charts";
import { GridComponent, LegendComponent, TooltipComponent } from "echarts/components";
import * as echarts from "echarts/core";
import { CanvasRenderer } from "echarts/renderers";
import { useEffect, useRef } from "react";
import type { Point } from "./model";

echarts.use([LineChart, GridComponent, LegendComponent, TooltipComponent, CanvasRenderer]);

export type ChartOption = echarts.EChartsCoreOption;

export const COLORS = {
  received: "#3b82f6",
  written: "#16a34a",
  dead: "#dc2626",
  retries: "#f59e0b",
  lag: "#0ea5e9",
  cpu: "#8b5cf6",
  memory: "#0891b2",
  extra: ["#f59e0b", "#db2777", "#0d9488", "#6366f1"],
};

interface EChartProps {
  option: ChartOption;
  height: number;
  testId?: string;
  /** Exposed as data-* attributes: what the chart currently shows, for tests and a11y. */
  summary?: Record<string, string | number>;
  label: string;
  /** Shown over the chart instead of bare axes while there is nothing to draw. */
  empty?: string | null;
}

export function EChart({ option, height, testId, summary, label, empty }: EChartProps) {
  const box = useRef<HTMLDivElement>(null);
  const chart = useRef<echarts.ECharts | null>(null);

  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const c = echarts.init(el, undefined, { renderer: "canvas" });
    chart.current = c;
    const ro = new ResizeObserver(() => c.resize());
    ro.observe(el);
    return () => {
      ro.disconnect();
      c.dispose();
      chart.current = null;
    };
  }, []);

  useEffect(() => {
    chart.current?.setOption(option, { notMerge: true, lazyUpdate: true });
  }, [option]);

  const data: Record<string, string> = {};
  for (const [k, v] of Object.entries(summary ?? {})) data[`data-${k}`] = String(v);
  return (
    <div className="chart-box" style={{ height }}>
      <div
        ref={box}
        className="chart"
        style={{ height }}
        role="img"
        aria-label={label}
        data-testid={testId}
        {...data}
      />
      {empty && <div className="chart-empty">{empty}</div>}
    </div>
  );
}

/** True when no series has a single value to draw. */
export function allEmpty(...series: Point[][]): boolean {
  return series.every((points) => points.every(([, v]) => v === null));
}

export interface LineSpec {
  name: string;
  data: Point[];
  color: string;
  area?: boolean;
}

function axisColors(dark: boolean) {
  return {
    text: dark ? "#9aa4b2" : "#5b6472",
    line: dark ? "#2a3140" : "#e3e7ee",
    tooltipBg: dark ? "#1b2130" : "#ffffff",
    tooltipText: dark ? "#e6e9ef" : "#1f2430",
  };
}

/** A time-axis line chart of live series (no animation: it redraws every second). */
export function lineOption(
  lines: LineSpec[],
  dark: boolean,
  unit: string,
  legend = true,
  range?: [number, number] | null,
): ChartOption {
  const c = axisColors(dark);
  return {
    animation: false,
    grid: { left: 8, right: 12, top: legend ? 34 : 10, bottom: 4, containLabel: true },
    legend: {
      show: legend,
      top: 0,
      left: 0,
      itemWidth: 14,
      itemHeight: 8,
      textStyle: { color: c.text, fontSize: 12 },
      data: lines.map((l) => l.name),
    },
    tooltip: {
      trigger: "axis",
      backgroundColor: c.tooltipBg,
      borderColor: c.line,
      textStyle: { color: c.tooltipText, fontSize: 12 },
      valueFormatter: (v: unknown) => (typeof v === "number" ? `${v} ${unit}` : "–"),
    },
    xAxis: {
      type: "time",
      // Charts shown together share one time range, so their points line up.
      min: range?.[0],
      max: range?.[1],
      axisLabel: { color: c.text, fontSize: 11, hideOverlap: true },
      axisLine: { lineStyle: { color: c.line } },
      splitLine: { show: false },
    },
    yAxis: {
      type: "value",
      min: 0,
      axisLabel: { color: c.text, fontSize: 11 },
      splitLine: { lineStyle: { color: c.line } },
    },
    series: lines.map((l) => ({
      name: l.name,
      type: "line",
      data: l.data,
      showSymbol: false,
      connectNulls: false,
      lineStyle: { width: 2, color: l.color },
      itemStyle: { color: l.color },
      areaStyle: l.area ? { color: l.color, opacity: 0.12 } : undefined,
    })),
  };
}

/** A bare sparkline: no axes, no legend; `fromZero` false zooms onto the data's range. */
export function sparklineOption(lines: LineSpec[], fromZero = true): ChartOption {
  return {
    animation: false,
    grid: { left: 0, right: 0, top: 2, bottom: 2 },
    xAxis: { type: "time", show: false },
    yAxis: fromZero
      ? { type: "value", show: false, min: 0 }
      : { type: "value", show: false, scale: true },
    tooltip: { show: false },
    series: lines.map((l) => ({
      name: l.name,
      type: "line",
      data: l.data,
      showSymbol: false,
      lineStyle: { width: 1.5, color: l.color },
      areaStyle: l.area ? { color: l.color, opacity: 0.15 } : undefined,
    })),
  };
}

/** Largest value of a series (0 when empty), for the charts' data-* summaries. */
export function peak(points: Point[]): number {
  let m = 0;
  for (const [, v] of points) if (v !== null && v > m) m = v;
  return m;
}

/**
 * First and last time of a series: the shared range of a page's charts. Null (each chart
 * picks its own) below two seconds, where a fixed range would zoom out to days.
 */
export function timeRange(points: Point[]): [number, number] | null {
  if (points.length < 2) return null;
  const range: [number, number] = [points[0][0], points[points.length - 1][0]];
  return range[1] - range[0] >= 2000 ? range : null;
}

/** The newest non-null value of a series, or null. */
export function lastValue(points: Point[]): number | null {
  for (let i = points.length - 1; i >= 0; i--) {
    const v = points[i][1];
    if (v !== null) return v;
  }
  return null;
}
