import { useMemo } from "react";
import { COLORS, EChart, lineOption, sparklineOption } from "../charts";
import { type History, type SystemSnapshot, formatBytes, formatDuration } from "../model";

/** The cdcsync process: CPU and memory over time (from the stream), threads, sockets. */
export function SystemPanel({
  system,
  history,
  tick,
  dark,
}: {
  system: SystemSnapshot | undefined;
  history: History;
  tick: number;
  dark: boolean;
}) {
  // `tick` is the change signal of the mutable history.
  const series = useMemo(() => history.systemSeries(), [history, tick]);
  const cpu = useMemo(
    () => lineOption([{ name: "CPU", data: series.cpu, color: COLORS.cpu, area: true }], dark, "%", false),
    [series, dark],
  );
  const mem = useMemo(
    () => sparklineOption([{ name: "RSS", data: series.rssMiB, color: COLORS.memory }], false),
    [series],
  );
  if (!system) {
    return (
      <section className="card" data-testid="system-panel">
        <h2>System</h2>
        <p className="muted">Waiting for the first snapshot…</p>
      </section>
    );
  }
  return (
    <section className="card system" data-testid="system-panel">
      <h2>System</h2>
      <div className="system-grid">
        <div className="system-figures">
          <div className="stat">
            <div className="stat-label">CPU</div>
            <div className="stat-value" data-testid="system-cpu">
              {system.cpu_percent.toFixed(1)} %
            </div>
          </div>
          <div className="stat">
            <div className="stat-label">Memory (RSS)</div>
            <div className="stat-value" data-testid="system-memory">
              {formatBytes(system.rss_bytes)}
            </div>
            <EChart option={mem} height={28} label="memory over time" testId="system-memory-chart" />
          </div>
          <div className="stat">
            <div className="stat-label">Threads · sockets</div>
            <div className="stat-value">
              {system.threads} · {system.open_connections ?? "–"}
            </div>
          </div>
          <div className="stat">
            <div className="stat-label">Uptime · pid</div>
            <div className="stat-value">
              {formatDuration(system.uptime_s)} · {system.pid}
            </div>
          </div>
        </div>
        <div>
          <div className="stat-label">CPU over time, % of one core</div>
          <EChart option={cpu} height={130} label="CPU over time" testId="system-cpu-chart" />
        </div>
      </div>
    </section>
  );
}
