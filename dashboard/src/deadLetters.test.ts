import { describe, expect, it } from "vitest";
import type { ReasonGroup, Reasons } from "./api";
import {
  PAGE_SIZE,
  WINDOW,
  destinationsText,
  dlqCommands,
  formatFailedAt,
  pageRequest,
  pageView,
  reasonShare,
  reasonsCaption,
  reloadDelay,
  shellQuote,
} from "./deadLetters";

function group(over: Partial<ReasonGroup> = {}): ReasonGroup {
  return {
    reason: 'invalid input syntax for type integer: "…"',
    count: 3,
    example: 'invalid input syntax for type integer: "abc"',
    table: "users",
    last_failed_at: "2026-12-01T10:00:00+00:00",
    destinations: [{ flow: "users", destination: "primary", count: 3 }],
    ...over,
  };
}

function reasons(over: Partial<Reasons> = {}): Reasons {
  return { total: 80, grouped: 80, distinct: 4, reasons: [], unavailable: [], ...over };
}

describe("pageRequest", () => {
  it("asks one letter more than a page, to know whether an older page exists", () => {
    expect(pageRequest(0)).toEqual({ offset: 0, limit: PAGE_SIZE + 1 });
    expect(pageRequest(30)).toEqual({ offset: 30, limit: PAGE_SIZE + 1 });
  });
  it("never asks past the window the API pages through", () => {
    expect(pageRequest(WINDOW - PAGE_SIZE)).toEqual({ offset: 990, limit: 10 });
    expect(pageRequest(WINDOW - 3).limit).toBe(3);
  });
});

describe("pageView", () => {
  it("says which letters of how many, and where one can go", () => {
    expect(pageView(0, 11, 80)).toEqual({
      shown: 10,
      label: "1–10 of 80",
      hasNewer: false,
      hasOlder: true,
      beyondWindow: false,
    });
    const middle = pageView(10, 11, 80);
    expect([middle.label, middle.hasNewer, middle.hasOlder]).toEqual(["11–20 of 80", true, true]);
    const last = pageView(70, 10, 80);
    expect([last.label, last.hasNewer, last.hasOlder]).toEqual(["71–80 of 80", true, false]);
  });
  it("never shows a total below what the page itself proves", () => {
    expect(pageView(70, 11, 75).label).toBe("71–80 of 81"); // the count came from before
    expect(pageView(0, 11, null).label).toBe("1–10 of 10+");
    expect(pageView(0, 4, null).label).toBe("1–4 of 4");
  });
  it("stops at the window and says so when more letters exist", () => {
    const end = pageView(WINDOW - PAGE_SIZE, 10, 12_345);
    expect(end.label).toBe("991–1,000 of 12,345");
    expect(end.hasOlder).toBe(false);
    expect(end.beyondWindow).toBe(true);
    expect(pageView(WINDOW - PAGE_SIZE, 10, 1000).beyondWindow).toBe(false);
  });
  it("handles an empty page", () => {
    expect(pageView(0, 0, 0)).toMatchObject({ shown: 0, label: "none of 0", hasOlder: false });
  });
});

describe("dlqCommands and shellQuote", () => {
  it("names the flow and asks for every letter", () => {
    expect(dlqCommands("orders", 80)).toEqual({
      list: "cdcsync dlq list --flow orders --limit 80",
      replay: "cdcsync dlq replay --flow orders --all",
    });
    expect(dlqCommands("orders", 0).list).toBe("cdcsync dlq list --flow orders --limit 1");
  });
  it("quotes a flow name the shell would otherwise split or expand", () => {
    expect(shellQuote("users-2.eu")).toBe("users-2.eu");
    expect(shellQuote("my flow")).toBe("'my flow'");
    expect(shellQuote("it's $HOME")).toBe("'it'\\''s $HOME'");
    expect(shellQuote("")).toBe("''");
  });
});

describe("reasonsCaption", () => {
  it("counts letters and reasons", () => {
    expect(reasonsCaption(reasons())).toBe("80 dead letters · 4 reasons");
    expect(reasonsCaption(reasons({ total: 1, grouped: 1, distinct: 1 }))).toBe(
      "1 dead letter · 1 reason",
    );
  });
  it("says when the reasons cover only the newest letters", () => {
    expect(reasonsCaption(reasons({ total: 25_000, grouped: 10_000, distinct: 2 }))).toBe(
      "25,000 dead letters · 2 reasons among the newest 10,000",
    );
  });
});

describe("destinationsText", () => {
  it("is silent with one destination and splits the count with several", () => {
    expect(destinationsText(group())).toBeNull();
    const two = group({
      count: 5,
      destinations: [
        { flow: "users", destination: "primary", count: 3 },
        { flow: "users", destination: "replica", count: 2 },
      ],
    });
    expect(destinationsText(two)).toBe("primary 3 · replica 2");
  });
});

describe("reasonShare", () => {
  it("is the percentage of the grouped letters, a sliver at least", () => {
    expect(reasonShare(44, 80)).toBe(55);
    expect(reasonShare(1, 10_000)).toBe(1);
    expect(reasonShare(0, 80)).toBe(0);
    expect(reasonShare(3, 0)).toBe(0);
  });
});

describe("formatFailedAt", () => {
  it("shows the clock time for today and the date too before", () => {
    const now = new Date(2026, 11, 7, 18, 0, 0);
    expect(formatFailedAt(new Date(2026, 11, 7, 9, 5, 3).toISOString(), now)).toBe("09:05:03");
    expect(formatFailedAt(new Date(2026, 11, 6, 23, 59, 59).toISOString(), now)).toBe(
      "2026-12-06 23:59:59",
    );
  });
  it("passes on what it cannot read", () => {
    expect(formatFailedAt(undefined)).toBe("–");
    expect(formatFailedAt("yesterday")).toBe("yesterday");
  });
});

describe("reloadDelay", () => {
  it("reloads at once the first time, then at most every gap", () => {
    expect(reloadDelay(10_000, null, 5000)).toBe(0);
    expect(reloadDelay(11_000, 10_000, 5000)).toBe(4000);
    expect(reloadDelay(16_000, 10_000, 5000)).toBe(0);
  });
});
