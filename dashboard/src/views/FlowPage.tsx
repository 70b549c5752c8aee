import { useEffect, useMemo, useState } from "react";
import { type FlowView, getJson } from "../api";
import { COLORS, EChart, type LineSpec, allEmpty, lineOption, peak, timeRange } from "../charts";
import { Badge, Link, PauseButton, Stat } from "../components";
import {
  type DestinationSnapshot,
  type FlowSnapshot,
  type History,
  destinationHealth,
  flowProblems,
  formatCount,
  formatMs,
  formatRate,
  showDropped,
} from "../model";
import {
  type PartitionView,
  ownerLabel,
  partitionHeadline,
  summarizePartitions,
} from "../partitions";
import { DeadLetters } from "./DeadLetters";

export function FlowPage({
  name,
  flow,
  history,
  tick,
  dark,
}: {
  name: string;
  flow: FlowSnapshot | undefined;
  history: History;
  tick: number;
  dark: boolean;
}) {
  // `tick` is the change signal of the mutable history.
  const series = useMemo(() => history.flowSeries(name), [history, name, tick]);
  const source = useFlowSource(name);
  const partitions = usePartitions(name);
  const range = timeRange(series.pending); // one point per snapshot: the whole window
  const throughput = useMemo(
    () =>
      lineOption(
        [
          { name: "received", data: series.received, color: COLORS.received, area: true },
          { name: "written", data: series.written, color: COLORS.written },
        ],
        dark,
        "events/s",
        true,
        range,
      ),
    [series, dark],
  );
  const lag = useMemo(
    () =>
      lineOption(
        [{ name: "pending", data: series.pending, color: COLORS.lag, area: true }],
        dark,
        "messages",
        false,
        range,
      ),
    [series, dark],
  );
  const errors = useMemo(
    () =>
      lineOption(
        [
          { name: "dead-lettered", data: series.deadLettered, color: COLORS.dead },
          { name: "write retries", data: series.retries, color: COLORS.retries },
        ],
        dark,
        "per s",
        true,
        range,
      ),
    [series, dark],
  );
  const latency = useMemo(() => {
    const lines: LineSpec[] = Object.entries(series.latency).map(([dest, data], i) => ({
      name: dest,
      data,
      color: i === 0 ? COLORS.written : COLORS.extra[(i - 1) % COLORS.extra.length],
    }));
    return lineOption(lines, dark, "ms", true, range);
  }, [series, dark]);

  if (!flow) {
    return (
      <div className="card">
        <h2>No flow named “{name}”</h2>
        <p>
          <Link to="/">Back to the overview</Link>
        </p>
      </div>
    );
  }
  const problems = flowProblems(flow);
  return (
    <div className="flow-page" data-testid="flow-page" data-flow={flow.name}>
      <div className="page-head">
        <div className="page-title">
          <Link to="/" className="back" testId="back-to-overview">
            ← Flows
          </Link>
          <h1>{flow.name}</h1>
          <Badge status={flow.status} testId="flow-status" />
        </div>
        <PauseButton
          flow={flow.name}
          paused={flow.paused ?? flow.status === "paused"}
          testId="flow-toggle"
        />
      </div>

      {problems.length > 0 && (
        <ul className="problems" data-testid="flow-problems">
          {problems.map((p) => (
            <li key={`${p.kind}-${p.destination}`} className={`problem-${p.kind}`}>
              <strong>
                {p.destination ? `destination ${p.destination}` : "flow"}{" "}
                {p.kind === "slow" ? "is slow" : p.kind === "failing" ? "is failing" : ""}:
              </strong>{" "}
              <span data-testid="problem-message">{p.message}</span>
            </li>
          ))}
        </ul>
      )}

      <section className="tiles">
        <Stat label="Received" value={formatCount(flow.received)} testId="stat-received" />
        <Stat label="Acked" value={formatCount(flow.acked)} testId="stat-acked" />
        <Stat label="Written" value={formatCount(flow.written)} testId="stat-written" />
        <Stat
          label="Dead-lettered"
          value={formatCount(flow.dead_lettered)}
          testId="stat-dead-lettered"
          tone={flow.dead_lettered ? "warn" : undefined}
        />
        <Stat
          label="Pending"
          value={formatCount(flow.consumer_pending)}
          testId="stat-pending"
          hint="JetStream messages not yet delivered plus delivered but not yet acked"
        />
        <Stat label="Events/s (10 s)" value={formatRate(flow.events_per_second)} testId="stat-rate" />
        <Stat label="Retries" value={formatCount(flow.retries)} testId="stat-retries" />
        <Stat label="Restarts" value={formatCount(flow.restarts)} testId="stat-restarts" />
        {showDropped(source, flow.dropped) && (
          <Stat
            label="Dropped"
            value={formatCount(flow.dropped ?? 0)}
            testId="stat-dropped"
            tone={flow.dropped ? "warn" : undefined}
            hint="core NATS messages shed because cdcsync could not keep up (not in PostgreSQL)"
          />
        )}
      </section>

      <div className="chart-grid">
        <section className="card">
          <h2>
            Throughput<span className="unit">events/s</span>
          </h2>
          <EChart
            option={throughput}
            height={220}
            label="received and written events per second"
            testId="chart-throughput"
            empty={series.written.length === 0 ? "Waiting for a second snapshot…" : null}
            summary={{
              points: series.written.length,
              "peak-received": peak(series.received),
              "peak-written": peak(series.written),
            }}
          />
        </section>
        <section className="card">
          <h2>
            Lag<span className="unit">messages pending in JetStream</span>
          </h2>
          <EChart
            option={lag}
            height={220}
            label="messages pending for the flow's consumer"
            testId="chart-lag"
            empty={
              allEmpty(series.pending) ? "No figure: core NATS, or the flow is not running" : null
            }
            summary={{ points: series.pending.length, peak: peak(series.pending) }}
          />
        </section>
        <section className="card">
          <h2>
            Errors<span className="unit">per second</span>
          </h2>
          <EChart
            option={errors}
            height={220}
            label="dead letters and write retries per second"
            testId="chart-errors"
            summary={{
              points: series.retries.length,
              "peak-dead-lettered": peak(series.deadLettered),
              "peak-retries": peak(series.retries),
            }}
          />
        </section>
        <section className="card">
          <h2>
            Batch latency<span className="unit">ms, last batch per destination</span>
          </h2>
          <EChart
            option={latency}
            height={220}
            label="last batch write time per destination"
            testId="chart-latency"
            empty={allEmpty(...Object.values(series.latency)) ? "No batch written yet" : null}
            summary={{
              destinations: Object.keys(series.latency).length,
              peak: Math.max(0, ...Object.values(series.latency).map(peak)),
            }}
          />
        </section>
      </div>

      <section className="card">
        <h2>Destinations</h2>
        <DestinationsTable destinations={flow.destinations} />
      </section>

      {partitions && partitions.length > 1 && <PartitionsCard partitions={partitions} />}

      <DeadLetters flow={flow.name} count={flow.dead_lettered} />
    </div>
  );
}

/** The flow's source configuration (GET /api/flows/{name}), fetched once per flow. */
function useFlowSource(name: string): { type?: string; jetstream?: unknown } | undefined {
  const [source, setSource] = useState<{ type?: string; jetstream?: unknown }>();
  useEffect(() => {
    let gone = false;
    getJson<FlowView>(`/api/flows/${encodeURIComponent(name)}`)
      .then((view) => {
        if (!gone) setSource(view.source as { type?: string; jetstream?: unknown });
      })
      .catch(() => {}); // unknown flow or server away: the counter just stays hidden
    return () => {
      gone = true;
    };
  }, [name]);
  return source;
}

const PARTITIONS_POLL_MS = 2000;

/** The flow's partitions (GET /api/flows/{name}), every 2 s: owners move between instances. */
function usePartitions(name: string): PartitionView[] | undefined {
  const [parts, setParts] = useState<PartitionView[]>();
  useEffect(() => {
    let gone = false;
    const load = () =>
      getJson<FlowView>(`/api/flows/${encodeURIComponent(name)}`)
        .then((view) => {
          if (!gone) setParts((view.partitions as PartitionView[] | undefined) ?? []);
        })
        .catch(() => {}); // the server away: the last figures stay until it is back
    load();
    const timer = setInterval(load, PARTITIONS_POLL_MS);
    return () => {
      gone = true;
      clearInterval(timer);
    };
  }, [name]);
  return parts;
}

function PartitionsCard({ partitions }: { partitions: PartitionView[] }) {
  const summary = summarizePartitions(partitions);
  const colour = new Map(summary.owners.map((o) => [o.owner, o.colour]));
  const rows = [...partitions].sort((a, b) => a.index - b.index);
  return (
    <section className="card" data-testid="partitions">
      <h2>
        Partitions
        <span className="unit" data-testid="partitions-headline">
          {partitionHeadline(summary)}
        </span>
      </h2>
      <div className="table-scroll">
        <table className="table">
          <thead>
            <tr>
              <th className="num">Partition</th>
              <th>Owner</th>
              <th>Status</th>
              <th className="num">Position</th>
              <th className="num">Lag</th>
            </tr>
          </thead>
          <tbody>
            {rows.map((p) => (
              <tr key={p.index} data-testid={`partition-row-${p.index}`} data-owner={p.owner ?? ""}>
                <td className="num" data-label="Partition">
                  {p.index}
                </td>
                <td data-label="Owner" data-testid={`partition-owner-${p.index}`}>
                  {p.owner ? (
                    <span className={`owner owner-${(colour.get(p.owner) ?? 0) % 6}`} title={p.owner}>
                      {ownerLabel(p.owner)}
                    </span>
                  ) : (
                    "–"
                  )}
                  {p.here && <span className="tag">this instance</span>}
                </td>
                <td data-label="Status">
                  <Badge status={p.status} testId={`partition-status-${p.index}`} />
                </td>
                <td className="num" data-label="Position">
                  {formatCount(p.position)}
                </td>
                <td className="num" data-label="Lag">
                  {formatCount(p.lag)}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </section>
  );
}

function DestinationsTable({ destinations }: { destinations: DestinationSnapshot[] }) {
  if (destinations.length === 0) return <p className="muted">No destination has started yet.</p>;
  return (
    <div className="table-scroll">
      <table className="table" data-testid="destinations-table">
        <thead>
          <tr>
            <th>Destination</th>
            <th>Status</th>
            <th className="num">Written</th>
            <th className="num">Dead-lettered</th>
            <th className="num">Events/s</th>
            <th className="num">Last batch</th>
            <th className="num">Retries</th>
            <th className="num">Checkpoint</th>
            <th>Last error</th>
          </tr>
        </thead>
        <tbody>
          {destinations.map((d) => {
            const health = destinationHealth(d);
            return (
              <tr key={d.name} data-testid={`dest-row-${d.name}`} className={`health-${health}`}>
                <td data-label="Destination">
                  <strong>{d.name}</strong>
                </td>
                <td data-label="Status">
                  <Badge status={d.status} testId={`dest-status-${d.name}`} />
                  {health === "slow" && <span className="tag tag-warn">slow</span>}
                </td>
                <td className="num" data-label="Written">
                  {formatCount(d.written)}
                </td>
                <td className="num" data-label="Dead-lettered">
                  {formatCount(d.dead_lettered)}
                </td>
                <td className="num" data-label="Events/s">
                  {formatRate(d.events_per_second)}
                </td>
                <td className="num" data-label="Last batch">
                  {formatMs(d.last_batch_latency_ms)}
                </td>
                <td className="num" data-label="Retries">
                  {formatCount(d.retries)}
                </td>
                <td className="num" data-label="Checkpoint">
                  {formatCount(d.checkpoint)}
                </td>
                <td className="error-cell" data-label="Last error" data-testid={`dest-error-${d.name}`}>
                  {d.last_error ?? "–"}
                </td>
              </tr>
            );
          })}
        </tbody>
      </table>
    </div>
  );
}
