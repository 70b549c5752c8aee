import { useMemo } from "react";
import { COLORS, EChart, lastValue, sparklineOption } from "../charts";
import { Badge, Link, PauseButton, Stat } from "../components";
import {
  type FlowSnapshot,
  type History,
  type StatsSnapshot,
  flowProblems,
  formatCount,
  formatRate,
  totals,
} from "../model";
import { SystemPanel } from "./SystemPanel";

export function Overview({
  snapshot,
  history,
  tick,
  dark,
}: {
  snapshot: StatsSnapshot | null;
  history: History;
  tick: number;
  dark: boolean;
}) {
  if (!snapshot) {
    return <p className="muted">Connecting to cdcsync…</p>;
  }
  const t = totals(snapshot.flows);
  return (
    <div className="overview" data-testid="overview">
      <section className="summary">
        <Stat label="Flows" value={snapshot.flows.length} testId="total-flows" />
        <Stat label="Written" value={formatCount(t.written)} testId="total-written" />
        <Stat
          label="Dead-lettered"
          value={formatCount(t.deadLettered)}
          testId="total-dead-lettered"
          tone={t.deadLettered > 0 ? "warn" : undefined}
        />
        <Stat
          label="Unhealthy"
          value={t.unhealthy}
          testId="total-unhealthy"
          tone={t.unhealthy > 0 ? "bad" : undefined}
        />
      </section>
      <section className="flow-grid" aria-label="flows">
        {snapshot.flows.map((f) => (
          <FlowCard key={f.name} flow={f} history={history} tick={tick} />
        ))}
      </section>
      <SystemPanel system={snapshot.system} history={history} tick={tick} dark={dark} />
    </div>
  );
}

function FlowCard({ flow, history, tick }: { flow: FlowSnapshot; history: History; tick: number }) {
  // `tick` is the change signal of the mutable history.
  const series = useMemo(() => history.flowSeries(flow.name), [history, flow.name, tick]);
  const spark = useMemo(
    () =>
      sparklineOption([
        { name: "written/s", data: series.written.slice(-90), color: COLORS.written, area: true },
      ]),
    [series],
  );
  const problems = flowProblems(flow);
  const id = flow.name;
  const now = lastValue(series.written);
  return (
    <article className={`card flow-card status-${flow.status}`} data-testid={`flow-card-${id}`}>
      <header className="flow-card-head">
        <Link to={`/flows/${encodeURIComponent(id)}`} className="flow-name" testId={`flow-link-${id}`}>
          {id}
        </Link>
        <Badge status={flow.status} testId={`flow-status-${id}`} />
      </header>
      <div className="spark-row">
        <EChart
          option={spark}
          height={44}
          label={`${id}: events written per second, last 90 s`}
          testId={`flow-sparkline-${id}`}
          summary={{ points: series.written.length, "last-written-rate": now ?? "" }}
        />
        <div className="spark-now" title="written per second, last second">
          {formatRate(now)}
        </div>
      </div>
      <dl className="flow-figures">
        <div>
          <dt>Written</dt>
          <dd data-testid={`flow-written-${id}`}>{formatCount(flow.written)}</dd>
        </div>
        <div>
          <dt>Dead-lettered</dt>
          <dd data-testid={`flow-dead-lettered-${id}`} className={flow.dead_lettered ? "warn" : ""}>
            {formatCount(flow.dead_lettered)}
          </dd>
        </div>
        <div>
          <dt>Pending</dt>
          <dd data-testid={`flow-pending-${id}`}>{formatCount(flow.consumer_pending)}</dd>
        </div>
        <div>
          <dt>Events/s (10 s)</dt>
          <dd data-testid={`flow-rate-${id}`}>{formatRate(flow.events_per_second)}</dd>
        </div>
      </dl>
      {problems.length > 0 && (
        <p className="problem" data-testid={`flow-problem-${id}`}>
          <strong>{problems[0].destination ?? "flow"}:</strong> {problems[0].message}
        </p>
      )}
      <footer className="flow-card-foot">
        <PauseButton
          flow={id}
          paused={flow.paused ?? flow.status === "paused"}
          testId={`flow-toggle-${id}`}
          compact
        />
        <Link to={`/flows/${encodeURIComponent(id)}`} className="btn btn-small btn-ghost">
          Details →
        </Link>
      </footer>
    </article>
  );
}
