import { describe, expect, it } from "vitest";
import { RECONNECT_AFTER_MS, STALE_MS, linkState, reconnectDelayMs } from "./connection";

describe("linkState", () => {
  it("is connecting before the first snapshot, within the grace period", () => {
    expect(linkState(1000, 0, null, false)).toBe("connecting");
  });
  it("is lost when the first snapshot never comes or the stream errored", () => {
    expect(linkState(STALE_MS + 1, 0, null, false)).toBe("lost");
    expect(linkState(10, 0, null, true)).toBe("lost");
  });
  it("is live while snapshots arrive and lost once they stop", () => {
    expect(linkState(5000, 0, 4000, false)).toBe("live");
    expect(linkState(4000 + STALE_MS + 1, 0, 4000, false)).toBe("lost");
    expect(linkState(5000, 0, 4900, true)).toBe("lost");
  });
  it("reconnects only after the banner is already up", () => {
    expect(RECONNECT_AFTER_MS).toBeGreaterThan(STALE_MS);
  });
});

describe("reconnectDelayMs", () => {
  it("backs off from 0.5 s, doubling, capped at 5 s", () => {
    expect([0, 1, 2, 3, 4, 10].map(reconnectDelayMs)).toEqual([500, 1000, 2000, 4000, 5000, 5000]);
  });
});
