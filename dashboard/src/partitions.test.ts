import { describe, expect, it } from "vitest";
import {
  type PartitionView,
  ownerLabel,
  partitionHeadline,
  ranges,
  summarizePartitions,
} from "./partitions";

function part(index: number, owner: string | null, over: Partial<PartitionView> = {}): PartitionView {
  return { index, owner, here: false, status: owner ? "running" : "unowned", position: 10, lag: 0, ...over };
}

describe("summarizePartitions", () => {
  it("groups partitions by owner, in a stable order, with their lag", () => {
    const s = summarizePartitions([
      part(3, "b-2-0002", { lag: 5 }),
      part(0, "a-1-0001", { here: true, lag: 1 }),
      part(1, "b-2-0002"),
      part(2, "a-1-0001", { here: true, lag: null }),
    ]);
    expect(s.owners.map((o) => [o.owner, o.partitions, o.here, o.lag, o.colour])).toEqual([
      ["a-1-0001", [0, 2], true, 1, 0],
      ["b-2-0002", [1, 3], false, 5, 1],
    ]);
    expect(s.lag).toBe(6);
    expect(s.balanced).toBe(true);
    expect(s.unowned).toEqual([]);
  });

  it("is not balanced when a partition has no owner or shares differ by more than one", () => {
    expect(summarizePartitions([part(0, "a-1-0001"), part(1, null)]).balanced).toBe(false);
    const lopsided = [0, 1, 2].map((i) => part(i, "a-1-0001")).concat([part(3, null)]);
    expect(summarizePartitions(lopsided).unowned).toEqual([3]);
    const uneven = [part(0, "a"), part(1, "a"), part(2, "a"), part(3, "b")];
    expect(summarizePartitions(uneven).balanced).toBe(false);
  });

  it("has no lag figure when no partition reports one", () => {
    expect(summarizePartitions([part(0, null, { lag: null })]).lag).toBeNull();
  });
});

describe("labels", () => {
  it("shortens instance ids to host and pid", () => {
    expect(ownerLabel("db-host-7-12345-ab12")).toBe("db-host-7 · pid 12345");
    expect(ownerLabel("custom")).toBe("custom");
    expect(ownerLabel(null)).toBe("–");
  });

  it("writes index lists as ranges", () => {
    expect(ranges([8, 0, 1, 2, 5, 7])).toBe("0–2, 5, 7–8");
    expect(ranges([])).toBe("");
  });

  it("says how the partitions are spread and which have no owner", () => {
    const s = summarizePartitions([
      part(0, "a-1-0001", { here: true }),
      part(1, "a-1-0001", { here: true }),
      part(2, "b-2-0002"),
      part(3, null),
    ]);
    expect(partitionHeadline(s)).toBe(
      "4 partitions over 2 instances (this one runs 0–1); no owner: 3",
    );
    expect(partitionHeadline(summarizePartitions([part(0, "b-2-0002")]))).toBe(
      "1 partition over 1 instance (none runs here)",
    );
  });
});
