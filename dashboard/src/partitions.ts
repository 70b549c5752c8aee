// The partitions of a flow as GET /api/flows/{name} lists them (several cdcsync instances
// share a partitioned JetStream flow), summarized for the flow page: who runs which
// partition, which have no owner, how far behind they are. Pure functions, unit-tested.

export interface PartitionView {
  index: number;
  owner: string | null; // the instance that runs it ("host-pid-tag"), null: nobody reported
  here: boolean; // run by the instance serving this dashboard
  status: string; // running, degraded, paused, failed; standby/starting here; unowned
  position: number | null; // lowest checkpoint over the destinations
  lag: number | null; // not yet delivered or not yet acknowledged
}

export interface OwnerShare {
  owner: string;
  label: string;
  here: boolean;
  partitions: number[];
  lag: number;
  colour: number; // index into the owner palette, stable for a given set of owners
}

export interface PartitionSummary {
  total: number;
  owners: OwnerShare[];
  unowned: number[];
  lag: number | null; // over the partitions that report one
  balanced: boolean; // shares differ by at most one partition, and none is unowned
}

/** "host-1234-ab12" -> "host · pid 1234"; anything else is shown as it is. */
export function ownerLabel(owner: string | null): string {
  if (!owner) return "–";
  const m = /^(.*)-(\d+)-[0-9a-f]{4}$/.exec(owner);
  return m ? `${m[1]} · pid ${m[2]}` : owner;
}

export function summarizePartitions(parts: PartitionView[]): PartitionSummary {
  const byOwner = new Map<string, OwnerShare>();
  const unowned: number[] = [];
  let lag: number | null = null;
  const sorted = [...parts].sort((a, b) => a.index - b.index);
  for (const p of sorted) {
    if (typeof p.lag === "number") lag = (lag ?? 0) + p.lag;
    if (!p.owner) {
      unowned.push(p.index);
      continue;
    }
    let share = byOwner.get(p.owner);
    if (!share) {
      share = {
        owner: p.owner,
        label: ownerLabel(p.owner),
        here: false,
        partitions: [],
        lag: 0,
        colour: 0,
      };
      byOwner.set(p.owner, share);
    }
    share.partitions.push(p.index);
    share.here ||= p.here;
    share.lag += p.lag ?? 0;
  }
  const owners = [...byOwner.values()].sort((a, b) => a.owner.localeCompare(b.owner));
  owners.forEach((o, i) => {
    o.colour = i;
  });
  const counts = owners.map((o) => o.partitions.length);
  const balanced =
    unowned.length === 0 && (counts.length === 0 || Math.max(...counts) - Math.min(...counts) <= 1);
  return { total: parts.length, owners, unowned, lag, balanced };
}

/** Index ranges for a compact list: [0, 1, 2, 5, 7, 8] -> "0–2, 5, 7–8". */
export function ranges(indexes: number[]): string {
  const sorted = [...indexes].sort((a, b) => a - b);
  const out: string[] = [];
  let i = 0;
  while (i < sorted.length) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j] + 1) j++;
    out.push(j > i ? `${sorted[i]}–${sorted[j]}` : `${sorted[i]}`);
    i = j + 1;
  }
  return out.join(", ");
}

/** One line for the card's heading: "8 partitions over 3 instances (this one runs 0–2)". */
export function partitionHeadline(s: PartitionSummary): string {
  const n = s.owners.length;
  let text = `${s.total} partition${s.total === 1 ? "" : "s"} over ${n} instance${n === 1 ? "" : "s"}`;
  const mine = s.owners.find((o) => o.here);
  text += mine ? ` (this one runs ${ranges(mine.partitions)})` : " (none runs here)";
  if (s.unowned.length) text += `; no owner: ${ranges(s.unowned)}`;
  return text;
}
