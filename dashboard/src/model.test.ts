import { describe, expect, it } from "vitest";
import {
  type DestinationSnapshot,
  type FlowSnapshot,
  type HistorySnapshot,
  type StatsSnapshot,
  History,
  destinationHealth,
  flowProblems,
  formatBytes,
  formatCount,
  formatDuration,
  formatMs,
  formatRate,
  rate,
  showDropped,
  snapshotTime,
  statusTone,
  totals,
} from "./model";

function dest(over: Partial<DestinationSnapshot> = {}): DestinationSnapshot {
  return {
    name: "primary",
    status: "running",
    written: 0,
    dead_lettered: 0,
    skipped: 0,
    batches: 0,
    failed_batches: 0,
    retries: 0,
    last_error: null,
    last_batch_latency_ms: null,
    events_per_second: 0,
    checkpoint: null,
    ...over,
  };
}

function flow(over: Partial<FlowSnapshot> = {}): FlowSnapshot {
  return {
    name: "users",
    status: "running",
    received: 0,
    acked: 0,
    written: 0,
    dead_lettered: 0,
    failed_batches: 0,
    retries: 0,
    restarts: 0,
    last_error: null,
    events_per_second: 0,
    consumer_pending: 0,
    destinations: [dest()],
    ...over,
  };
}

function snap(flows: FlowSnapshot[], system?: StatsSnapshot["system"]): StatsSnapshot {
  return { version: "0.1.0", uptime_s: 1, flows, system };
}

describe("rate", () => {
  it("is the counter difference per second", () => {
    expect(rate(100, 300, 2)).toBe(100);
  });
  it("treats a counter that went down as reset: what it counts now is new", () => {
    expect(rate(500, 20, 1)).toBe(20);
  });
  it("is zero for a zero or negative interval", () => {
    expect(rate(0, 10, 0)).toBe(0);
    expect(rate(0, 10, -1)).toBe(0);
  });
});

describe("History", () => {
  it("turns successive snapshots into per-second received and written series", () => {
    const h = new History();
    h.push(snap([flow({ received: 0, written: 0 })]), 1000);
    h.push(snap([flow({ received: 50, written: 40 })]), 2000);
    h.push(snap([flow({ received: 150, written: 140, dead_lettered: 2 })]), 3000);
    const s = h.flowSeries("users");
    expect(s.received).toEqual([
      [2000, 50],
      [3000, 100],
    ]);
    expect(s.written).toEqual([
      [2000, 40],
      [3000, 100],
    ]);
    expect(s.deadLettered).toEqual([
      [2000, 0],
      [3000, 2],
    ]);
  });

  it("charts lag as the pending gauge (no rate) and retries as a rate", () => {
    const h = new History();
    h.push(snap([flow({ consumer_pending: 0, retries: 0 })]), 1000);
    h.push(snap([flow({ consumer_pending: 250, retries: 3 })]), 2000);
    h.push(snap([flow({ consumer_pending: null, retries: 3 })]), 3000);
    const s = h.flowSeries("users");
    expect(s.pending).toEqual([
      [1000, 0],
      [2000, 250],
      [3000, null],
    ]);
    expect(s.retries).toEqual([
      [2000, 3],
      [3000, 0],
    ]);
  });

  it("divides by the real interval between snapshots", () => {
    const h = new History();
    h.push(snap([flow({ received: 0 })]), 0);
    h.push(snap([flow({ received: 30 })]), 1500);
    expect(h.flowSeries("users").received).toEqual([[1500, 20]]);
  });

  it("does not draw a negative rate after a counter reset", () => {
    const h = new History();
    h.push(snap([flow({ received: 1000, written: 1000 })]), 1000);
    h.push(snap([flow({ received: 5, written: 3 })]), 2000);
    const s = h.flowSeries("users");
    expect(s.received).toEqual([[2000, 5]]);
    expect(s.written).toEqual([[2000, 3]]);
  });

  it("breaks the line across a gap in the stream (lost connection)", () => {
    const h = new History();
    h.push(snap([flow({ received: 0 })]), 1000);
    h.push(snap([flow({ received: 100 })]), 11000);
    const s = h.flowSeries("users");
    expect(s.received).toEqual([
      [1001, null],
      [11000, 10],
    ]);
    expect(s.written.map(([, v]) => v)).toEqual([null, 0]);
  });

  it("keeps latency per destination, nulls for no batch yet", () => {
    const h = new History();
    h.push(
      snap([flow({ destinations: [dest(), dest({ name: "replica", last_batch_latency_ms: 4 })] })]),
      1000,
    );
    h.push(
      snap([
        flow({
          destinations: [
            dest({ last_batch_latency_ms: 2.5 }),
            dest({ name: "replica", last_batch_latency_ms: 7 }),
          ],
        }),
      ]),
      2000,
    );
    expect(h.flowSeries("users").latency).toEqual({
      primary: [
        [1000, null],
        [2000, 2.5],
      ],
      replica: [
        [1000, 4],
        [2000, 7],
      ],
    });
  });

  it("keeps only the last `capacity` snapshots and ignores out-of-order ones", () => {
    const h = new History(3);
    for (let i = 1; i <= 5; i++) h.push(snap([flow({ received: i * 10 })]), i * 1000);
    h.push(snap([flow({ received: 999 })]), 4500);
    expect(h.size).toBe(3);
    expect(h.latest()?.flows[0].received).toBe(50);
    expect(h.flowSeries("users").received).toEqual([
      [4000, 10],
      [5000, 10],
    ]);
  });

  it("gives an empty series for an unknown flow and restarts after the flow vanishes", () => {
    const h = new History();
    h.push(snap([flow({ received: 10 })]), 1000);
    h.push(snap([]), 2000);
    h.push(snap([flow({ received: 20 })]), 3000);
    expect(h.flowSeries("users").received).toEqual([]);
    expect(h.flowSeries("nope")).toEqual({
      received: [],
      written: [],
      deadLettered: [],
      retries: [],
      pending: [],
      latency: {},
    });
  });

  it("shapes CPU and memory from the system figures in the stream", () => {
    const h = new History();
    h.push(snap([]), 1000); // an older server without `system`
    h.push(
      snap([], {
        version: "0.1.0",
        pid: 1,
        uptime_s: 2,
        cpu_percent: 12.345,
        rss_bytes: 100 * 1024 * 1024,
        threads: 3,
        open_connections: 4,
      }),
      2000,
    );
    expect(h.systemSeries()).toEqual({ cpu: [[2000, 12.3]], rssMiB: [[2000, 100]] });
  });
});

/** A snapshot as GET /api/history keeps it (chart fields only), at server time `ts` s. */
function kept(ts: number, received: number, written = received): HistorySnapshot {
  return {
    ts,
    flows: [
      {
        name: "users",
        received,
        written,
        dead_lettered: 0,
        retries: 0,
        consumer_pending: 0,
        destinations: [{ name: "primary", last_batch_latency_ms: 5 }],
      },
    ],
    system: { cpu_percent: 1, rss_bytes: 1024 * 1024 },
  };
}

function live(ts: number, received: number): StatsSnapshot {
  return { ...snap([flow({ received, written: received })]), ts };
}

describe("History seeded from GET /api/history", () => {
  it("draws the seeded minutes at once, then continues with the live snapshots", () => {
    const h = new History();
    h.seed([kept(100, 0), kept(101, 10), kept(102, 30)]);
    expect(h.latest()).toBeNull(); // a seeded snapshot is never shown as the current state
    expect(h.flowSeries("users").received).toEqual([
      [101_000, 10],
      [102_000, 20],
    ]);
    const s = live(103, 60);
    h.push(s, snapshotTime(s, 0));
    expect(h.latest()).toBe(s);
    expect(h.flowSeries("users").received.map((p) => p[1])).toEqual([10, 20, 30]);
    expect(h.systemSeries().cpu).toHaveLength(3);
  });

  it("draws a snapshot received both live and in the history once", () => {
    const h = new History();
    const a = live(101, 10);
    const b = live(102, 30);
    h.push(a, snapshotTime(a, 0));
    h.push(b, snapshotTime(b, 0));
    // The history arrives after the stream started: it overlaps the live snapshots.
    h.seed([kept(99, 0), kept(100, 5), kept(101, 10), kept(102, 30)]);
    expect(h.size).toBe(4);
    expect(h.latest()).toBe(b);
    expect(h.flowSeries("users").received).toEqual([
      [100_000, 5],
      [101_000, 5],
      [102_000, 20],
    ]);
    // The live copy (full fields) is the one kept for a shared timestamp.
    const again = live(102, 30);
    h.push(again, snapshotTime(again, 0));
    h.seed([kept(102, 30)]);
    expect(h.size).toBe(4);
    expect(h.latest()).toBe(again);
    // A reconnect seeds again with newer snapshots: the hole is filled, nothing doubled.
    h.seed([kept(101, 10), kept(102, 30), kept(103, 31), kept(104, 40)]);
    expect(h.flowSeries("users").received.map((p) => p[0])).toEqual([
      100_000, 101_000, 102_000, 103_000, 104_000,
    ]);
  });

  it("never draws a negative rate across a counter reset inside the history", () => {
    const h = new History();
    // 100 then a reset (POST /api/stats/reset) then 4 and 9 counted after it.
    h.seed([kept(10, 80), kept(11, 100), kept(12, 4), kept(13, 9)]);
    const rates = h.flowSeries("users").written.map((p) => p[1]);
    expect(rates).toEqual([20, 4, 5]);
    expect(rates.every((r) => (r ?? 0) >= 0)).toBe(true);
  });

  it("keeps the newest `capacity` snapshots and skips ones without a timestamp", () => {
    const h = new History(3);
    h.seed([kept(1, 1), kept(2, 2), kept(3, 3), kept(4, 4)]);
    h.seed([{ ...kept(5, 5), ts: undefined as unknown as number }]);
    expect(h.size).toBe(3);
    expect(h.flowSeries("users").received.map((p) => p[0])).toEqual([3000, 4000]);
  });

  it("shows dropped for core NATS or when anything was dropped, not for JetStream", () => {
    expect(showDropped({ type: "nats", jetstream: null }, 0)).toBe(true);
    expect(showDropped({ type: "nats", jetstream: { stream: "S" } }, 0)).toBe(false);
    expect(showDropped({ type: "nats", jetstream: { stream: "S" } }, 3)).toBe(true);
    expect(showDropped(undefined, undefined)).toBe(false);
  });

  it("uses the server time of a snapshot, or the arrival time for older servers", () => {
    expect(snapshotTime({ ts: 1.2345 }, 7)).toBe(1235);
    expect(snapshotTime({}, 7)).toBe(7);
  });
});

describe("status and problems", () => {
  it("maps states to badge tones", () => {
    expect(statusTone("running")).toBe("ok");
    expect(statusTone("degraded")).toBe("warn");
    expect(statusTone("failed")).toBe("bad");
    expect(statusTone("stopped")).toBe("bad");
    expect(statusTone("paused")).toBe("idle");
    expect(statusTone("standby")).toBe("idle");
    expect(statusTone("something new")).toBe("idle");
  });

  it("names the failing destination and its error, first", () => {
    const f = flow({
      status: "degraded",
      last_error: "connection refused",
      destinations: [
        dest({ name: "fast", last_batch_latency_ms: 2500 }),
        dest({ name: "broken", status: "degraded", last_error: "connection refused" }),
      ],
    });
    expect(flowProblems(f)).toEqual([
      { destination: "broken", kind: "failing", message: "connection refused" },
      { destination: "fast", kind: "slow", message: "last batch took 2.50 s" },
    ]);
    expect(destinationHealth(f.destinations[0])).toBe("slow");
    expect(destinationHealth(f.destinations[1])).toBe("failing");
  });

  it("reports the flow's own error when no destination explains it", () => {
    const f = flow({ status: "degraded", last_error: "nats: no servers available" });
    expect(flowProblems(f)).toEqual([
      { destination: null, kind: "flow", message: "nats: no servers available" },
    ]);
    expect(flowProblems(flow({ status: "failed" }))).toEqual([
      { destination: null, kind: "flow", message: "flow is failed" },
    ]);
  });

  it("has nothing to say about a healthy or paused flow, even with an old error", () => {
    expect(flowProblems(flow())).toEqual([]);
    expect(flowProblems(flow({ status: "paused", last_error: "old" }))).toEqual([]);
  });

  it("sums totals and counts degraded, failed and stopped flows as unhealthy", () => {
    const t = totals([
      flow({ received: 10, written: 8, dead_lettered: 2 }),
      flow({ name: "b", status: "paused", received: 5, written: 5 }),
      flow({ name: "c", status: "degraded", received: 1 }),
      flow({ name: "d", status: "running", paused: true }),
      flow({ name: "e", status: "starting" }),
      flow({ name: "f", status: "standby" }),
      flow({ name: "g", status: "failed" }),
    ]);
    expect(t).toEqual({ received: 16, written: 13, deadLettered: 2, unhealthy: 2 });
  });
});

describe("formatting", () => {
  it("formats numbers for humans", () => {
    expect(formatCount(1234567)).toBe("1,234,567");
    expect(formatCount(null)).toBe("–");
    expect(formatRate(12.34)).toBe("12.3/s");
    expect(formatRate(250.4)).toBe("250/s");
    expect(formatRate(12500)).toBe("12.5k/s");
    expect(formatMs(4.21)).toBe("4.2 ms");
    expect(formatMs(42.4)).toBe("42 ms");
    expect(formatMs(1500)).toBe("1.50 s");
    expect(formatBytes(512)).toBe("512 B");
    expect(formatBytes(91234304)).toBe("87.0 MiB");
    expect(formatDuration(59)).toBe("59s");
    expect(formatDuration(3725)).toBe("1h 2m");
    expect(formatDuration(90061)).toBe("1d 1h");
  });
});
