// The data shaping behind the dashboard: snapshot types (as GET /api/stats and
// /api/stream send them), a bounded history of snapshots turned into per-second chart
// series, and the status/problem derivation that says which destination is failing
// or slow and why. Pure functions, no DOM: unit-tested with Vitest.

export interface DestinationSnapshot {
  name: string;
  status: string;
  written: number;
  dead_lettered: number;
  skipped: number;
  batches: number;
  failed_batches: number;
  retries: number;
  last_error: string | null;
  last_batch_latency_ms: number | null;
  events_per_second: number;
  checkpoint: number | null;
}

export interface FlowSnapshot {
  name: string;
  status: string;
  received: number;
  acked: number;
  written: number;
  dead_lettered: number;
  failed_batches: number;
  retries: number;
  restarts: number;
  last_error: string | null;
  events_per_second: number;
  consumer_pending: number | null;
  dropped?: number; // core NATS messages shed (slow consumer); always 0 for JetStream
  paused?: boolean; // pause requested (status turns "paused" once in-flight batches commit)
  destinations: DestinationSnapshot[];
}

export interface SystemSnapshot {
  version: string;
  pid: number;
  uptime_s: number;
  cpu_percent: number;
  rss_bytes: number;
  threads: number;
  open_connections: number | null;
}

export interface StatsSnapshot {
  version: string;
  uptime_s: number;
  flows: FlowSnapshot[];
  system?: SystemSnapshot;
  ts?: number; // server time of the snapshot, s since the epoch (stream and history)
}

/**
 * A snapshot as GET /api/history keeps it: only the fields the charts use. It is never
 * shown as the current state (see History.latest).
 */
export interface HistorySnapshot {
  ts: number;
  flows: (Pick<
    FlowSnapshot,
    "name" | "received" | "written" | "dead_lettered" | "retries" | "consumer_pending"
  > & {
    destinations: Pick<DestinationSnapshot, "name" | "last_batch_latency_ms">[];
  })[];
  system?: Pick<SystemSnapshot, "cpu_percent" | "rss_bytes">;
}

/** The chart time of a snapshot: the server's `ts` when it has one, else `received`. */
export function snapshotTime(snapshot: { ts?: number }, received: number): number {
  return typeof snapshot.ts === "number" ? Math.round(snapshot.ts * 1000) : received;
}

/** One chart point: [time in ms since the epoch, value or null for a gap]. */
export type Point = [number, number | null];

export interface FlowSeries {
  received: Point[]; // events/s taken from the source
  written: Point[]; // events/s applied, summed over destinations
  deadLettered: Point[]; // events/s stored as dead letters
  retries: Point[]; // write attempts repeated per second (a destination failing)
  pending: Point[]; // lag: JetStream messages not yet delivered or not yet acked
  latency: Record<string, Point[]>; // per destination: last batch write time, ms
}

export interface SystemSeries {
  cpu: Point[];
  rssMiB: Point[];
}

interface Sample {
  t: number;
  snapshot: StatsSnapshot; // a HistorySnapshot for seeded samples: chart fields only
}

/**
 * Per-second rate of a monotonically increasing counter between two samples.
 *
 * A counter that went down was reset (POST /api/stats/reset or a restarted server):
 * everything it counts now happened after the reset, within the interval.
 */
export function rate(prev: number, curr: number, seconds: number): number {
  if (!(seconds > 0)) return 0;
  const delta = curr >= prev ? curr - prev : curr;
  return delta / seconds;
}

/** A gap longer than this many seconds between snapshots is drawn as a break. */
const GAP_S = 5;

/**
 * The last `capacity` snapshots of the stream and the chart series derived from them.
 *
 * Rates come from counter differences between consecutive snapshots, so a chart shows
 * what happened in each second (the server's own `events_per_second` is a 10 s mean).
 */
export class History {
  private samples: Sample[] = [];
  private current: StatsSnapshot | null = null;
  private currentT = Number.NEGATIVE_INFINITY;

  // 300: the five minutes GET /api/history returns.
  constructor(readonly capacity = 300) {}

  push(snapshot: StatsSnapshot, t: number): void {
    if (t < this.currentT) return; // out of order
    this.current = snapshot;
    this.currentT = t;
    const last = this.samples[this.samples.length - 1];
    if (last && t === last.t) {
      last.snapshot = snapshot; // already seeded from the history: keep the full one
    } else if (!last || t > last.t) {
      this.samples.push({ t, snapshot });
      this.trim();
    }
  }

  /**
   * Merge the server's history (GET /api/history, oldest first) into the samples: on
   * load it fills the charts with the last minutes; after a reconnect it fills the hole.
   * A snapshot already held (the same `ts`, e.g. also received live) is kept once.
   */
  seed(snapshots: HistorySnapshot[]): void {
    const byTime = new Map<number, Sample>();
    for (const s of snapshots) {
      const t = snapshotTime(s, Number.NaN);
      if (Number.isFinite(t)) byTime.set(t, { t, snapshot: s as unknown as StatsSnapshot });
    }
    for (const s of this.samples) byTime.set(s.t, s); // live (full) snapshots win
    this.samples = [...byTime.values()].sort((a, b) => a.t - b.t);
    this.trim();
  }

  private trim(): void {
    if (this.samples.length > this.capacity) {
      this.samples.splice(0, this.samples.length - this.capacity);
    }
  }

  get size(): number {
    return this.samples.length;
  }

  /** The newest snapshot received live (seeded ones lack the non-chart fields). */
  latest(): StatsSnapshot | null {
    return this.current;
  }

  flowSeries(name: string): FlowSeries {
    const out: FlowSeries = {
      received: [],
      written: [],
      deadLettered: [],
      retries: [],
      pending: [],
      latency: {},
    };
    let prev: { t: number; flow: FlowSnapshot } | null = null;
    for (const { t, snapshot } of this.samples) {
      const flow = snapshot.flows.find((f) => f.name === name);
      if (!flow) {
        prev = null;
        continue;
      }
      for (const d of flow.destinations) {
        (out.latency[d.name] ??= []).push([t, d.last_batch_latency_ms]);
      }
      out.pending.push([t, flow.consumer_pending]);
      if (prev) {
        const seconds = (t - prev.t) / 1000;
        const rates: [Point[], keyof FlowSnapshot][] = [
          [out.received, "received"],
          [out.written, "written"],
          [out.deadLettered, "dead_lettered"],
          [out.retries, "retries"],
        ];
        for (const [series, key] of rates) {
          if (seconds > GAP_S) series.push([prev.t + 1, null]);
          const before = prev.flow[key] as number;
          series.push([t, round1(rate(before, flow[key] as number, seconds))]);
        }
      }
      prev = { t, flow };
    }
    return out;
  }

  systemSeries(): SystemSeries {
    const out: SystemSeries = { cpu: [], rssMiB: [] };
    for (const { t, snapshot } of this.samples) {
      const sys = snapshot.system;
      if (!sys) continue;
      out.cpu.push([t, round1(sys.cpu_percent)]);
      out.rssMiB.push([t, round1(sys.rss_bytes / 1024 / 1024)]);
    }
    return out;
  }
}

function round1(n: number): number {
  return Math.round(n * 10) / 10;
}

/**
 * Whether the flow page shows the `dropped` counter: for core NATS (the source has no
 * `jetstream` section in GET /api/flows/{name}), where messages can be shed, or
 * whenever something was dropped. JetStream never drops, so there it would only be noise.
 */
export function showDropped(
  source: { type?: string; jetstream?: unknown } | undefined,
  dropped: number | undefined,
): boolean {
  if ((dropped ?? 0) > 0) return true;
  return source?.type === "nats" && !source.jetstream;
}

/** Badge colour of a flow or destination state. */
export type Tone = "ok" | "warn" | "bad" | "idle";

export function statusTone(status: string): Tone {
  switch (status) {
    case "running":
      return "ok";
    case "degraded":
      return "warn";
    case "failed":
    case "stopped":
      return "bad";
    default: // starting, standby, paused, unknown
      return "idle";
  }
}

/** A destination is called slow when its last batch took longer than this. */
export const SLOW_BATCH_MS = 1000;

export interface Problem {
  destination: string | null; // null: the flow itself (source, restarts)
  kind: "failing" | "slow" | "flow";
  message: string;
}

/**
 * What an operator must look at for this flow: failing destinations with their error,
 * slow ones with their batch time, and the flow's own error while it is not running.
 * Failing comes first.
 */
export function flowProblems(flow: FlowSnapshot, slowMs = SLOW_BATCH_MS): Problem[] {
  const failing: Problem[] = [];
  const slow: Problem[] = [];
  for (const d of flow.destinations) {
    if (d.status === "degraded" || d.status === "failed") {
      failing.push({
        destination: d.name,
        kind: "failing",
        message: d.last_error ?? `destination is ${d.status}`,
      });
    } else if (d.last_batch_latency_ms !== null && d.last_batch_latency_ms > slowMs) {
      slow.push({
        destination: d.name,
        kind: "slow",
        message: `last batch took ${formatMs(d.last_batch_latency_ms)}`,
      });
    }
  }
  const out = [...failing, ...slow];
  const flowBad = flow.status === "degraded" || flow.status === "failed";
  if (flowBad && flow.last_error && !failing.some((p) => p.message === flow.last_error)) {
    out.unshift({ destination: null, kind: "flow", message: flow.last_error });
  } else if (flowBad && out.length === 0) {
    out.push({ destination: null, kind: "flow", message: `flow is ${flow.status}` });
  }
  return out;
}

/** Health of one destination for the table: failing, slow, or its plain status. */
export function destinationHealth(d: DestinationSnapshot, slowMs = SLOW_BATCH_MS): string {
  if (d.status === "degraded" || d.status === "failed") return "failing";
  if (d.last_batch_latency_ms !== null && d.last_batch_latency_ms > slowMs) return "slow";
  return d.status;
}

/** Totals across flows, for the page header. */
export function totals(flows: FlowSnapshot[]): {
  received: number;
  written: number;
  deadLettered: number;
  unhealthy: number;
} {
  let received = 0;
  let written = 0;
  let deadLettered = 0;
  let unhealthy = 0;
  for (const f of flows) {
    received += f.received;
    written += f.written;
    deadLettered += f.dead_lettered;
    // The same rule as the badge colour: starting, standby and paused (or pausing) are not
    // trouble; degraded, failed and stopped are.
    const tone = statusTone(f.status);
    if (tone === "warn" || tone === "bad") unhealthy += 1;
  }
  return { received, written, deadLettered, unhealthy };
}

export function formatCount(n: number | null | undefined): string {
  if (n === null || n === undefined) return "–";
  return Math.round(n).toLocaleString("en-US");
}

export function formatRate(n: number | null | undefined): string {
  if (n === null || n === undefined) return "–";
  if (n >= 10_000) return `${(n / 1000).toFixed(1)}k/s`;
  return `${n >= 100 ? Math.round(n) : Math.round(n * 10) / 10}/s`;
}

export function formatMs(ms: number | null | undefined): string {
  if (ms === null || ms === undefined) return "–";
  if (ms >= 1000) return `${(ms / 1000).toFixed(2)} s`;
  return `${ms >= 10 ? Math.round(ms) : ms.toFixed(1)} ms`;
}

export function formatBytes(n: number | null | undefined): string {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

export function formatDuration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.floor(seconds);
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d > 0) return `${d}d ${h}h`;
  if (h > 0) return `${h}h ${m}m`;
  if (m > 0) return `${m}m ${s % 60}s`;
  return `${s}s`;
}
