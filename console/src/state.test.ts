import { describe, expect, it } from "vitest";
import {
  actions,
  checkPort,
  duration,
  keepLast,
  LineBuffer,
  localTime,
  optionalInt,
  parseLogLine,
  parseRoute,
  phaseRows,
  progress,
  routePath,
  workspaceToStop,
} from "./state";

describe("LineBuffer", () => {
  it("joins a line split across chunks and keeps the unfinished rest", () => {
    const b = new LineBuffer();
    expect(b.push("2026-01-01T00:00:00Z stdout he")).toEqual([]);
    expect(b.push("llo\nsecond\r\nthi")).toEqual(["2026-01-01T00:00:00Z stdout hello", "second"]);
    expect(b.end()).toEqual(["thi"]);
    expect(b.end()).toEqual([]);
  });
  it("gives every line of a chunk with many", () => {
    expect(new LineBuffer().push("a\nb\n\nc\n")).toEqual(["a", "b", "", "c"]);
  });
});

describe("parseLogLine", () => {
  it("splits time, stream and text", () => {
    expect(parseLogLine("2026-11-26T03:00:00.5Z stderr oh no: x")).toEqual({
      at: "2026-11-26T03:00:00.5Z",
      stream: "stderr",
      text: "oh no: x",
    });
  });
  it("keeps a line it cannot parse whole", () => {
    expect(parseLogLine("garbage stdout x")).toEqual({ at: null, stream: "", text: "garbage stdout x" });
    expect(parseLogLine("2026-11-26T03:00:00Z other x").text).toBe("2026-11-26T03:00:00Z other x");
  });
});

describe("workspaces", () => {
  it("reads the workspace to stop out of a capacity rejection", () => {
    const m =
      "node `node-1` has 512 MiB of memory free, the workspace needs 4096 MiB; stop the least recently accessed running workspace there: `vt workspace stop old-dev`";
    expect(workspaceToStop(m)).toBe("old-dev");
    expect(workspaceToStop("stop or scale down what runs there (`vt node list`, `vt instances`)")).toBeNull();
  });
  it("tracks a new workspace's progress to running, or its failure", () => {
    expect(progress("creating")).toMatchObject({ step: 1, done: false });
    expect(progress("starting")).toMatchObject({ step: 2, done: false });
    expect(progress("running")).toMatchObject({ step: 3, done: true, failed: false });
    expect(progress("failed")).toMatchObject({ done: true, failed: true });
    expect(progress("running")).toMatchObject({ left: false });
    expect(progress("stopping")).toMatchObject({ left: true });
    expect(progress("deleting")).toMatchObject({ left: true });
  });
  it("offers the actions that fit the status", () => {
    expect(actions("running", "running")).toEqual({ start: false, stop: true, open: true });
    expect(actions("stopped", "stopped")).toEqual({ start: true, stop: false, open: false });
    expect(actions("deleting", "deleted")).toEqual({ start: false, stop: false, open: false });
    expect(actions("failed", "running")).toEqual({ start: true, stop: false, open: false });
  });
  it("checks a port before asking the API", () => {
    expect(checkPort(" 3000 ", [])).toEqual({ port: 3000 });
    expect(checkPort("0", [])).toHaveProperty("error");
    expect(checkPort("65536", [])).toHaveProperty("error");
    expect(checkPort("80a", [])).toHaveProperty("error");
    expect(checkPort("3000", [3000])).toEqual({ error: "port 3000 is already registered" });
    expect(checkPort("6", [1, 2, 3, 4, 5])).toEqual({ error: "at most 5 ports per workspace: remove one first" });
  });
  it("reads optional numbers of the create form", () => {
    expect(optionalInt("", "vCPUs", 1, 64)).toBeNull();
    expect(optionalInt(" 4 ", "vCPUs", 1, 64)).toBe(4);
    expect(() => optionalInt("0", "vCPUs", 1, 64)).toThrow("vCPUs: a whole number from 1 to 64");
    expect(() => optionalInt("1.5", "vCPUs", 1, 64)).toThrow();
  });
});

describe("times", () => {
  it("shows API times in the given zone", () => {
    expect(localTime("2026-11-26T03:04:05Z", "UTC")).toBe("2026-11-26 03:04:05");
    expect(localTime("2026-11-26T03:04:05Z", "Europe/Paris")).toBe("2026-11-26 04:04:05");
    expect(localTime(null)).toBe("never");
    expect(localTime("not a time")).toBe("not a time");
  });
  it("shows durations", () => {
    expect(duration(850)).toBe("850 ms");
    expect(duration(4230)).toBe("4.2 s");
    expect(duration(185_000)).toBe("3 min 5 s");
    expect(duration(null)).toBe("–");
  });
});

describe("deploy phases", () => {
  it("lists every phase in order, reached or not", () => {
    const rows = phaseRows([{ phase: "scheduled", at: "2026-11-26T03:00:00Z", after_ms: 12 }]);
    expect(rows.map((r) => r.phase)).toEqual(["scheduled", "image_ready", "booted", "healthy"]);
    expect(rows[0]).toMatchObject({ reached: true, after_ms: 12 });
    expect(rows[3]).toMatchObject({ reached: false, after_ms: null });
  });
});

describe("routes", () => {
  it("parses every page and round-trips", () => {
    for (const r of [
      { page: "workspaces" },
      { page: "orgs" },
      { page: "org", org: "acme" },
      { page: "events", org: "acme" },
      { page: "app", org: "acme", app: "web" },
      { page: "env", org: "acme", app: "web", env: "prod" },
    ] as const) {
      expect(parseRoute(routePath(r))).toEqual(r);
    }
    expect(parseRoute("/app/")).toEqual({ page: "workspaces" });
    expect(parseRoute("/app")).toEqual({ page: "workspaces" });
  });
  it("refuses what is not a page", () => {
    expect(parseRoute("/app/nope").page).toBe("not_found");
    expect(parseRoute("/app/orgs/ACME").page).toBe("not_found");
    expect(parseRoute("/app/orgs/a/apps").page).toBe("not_found");
    expect(parseRoute("/app/orgs/%E0%A4%A").page).toBe("not_found");
    expect(parseRoute("/elsewhere").page).toBe("not_found");
  });
});

describe("lists", () => {
  it("keeps the newest items", () => {
    expect(keepLast([1, 2, 3], [4, 5], 3)).toEqual([3, 4, 5]);
    expect(keepLast([1], [2], 3)).toEqual([1, 2]);
  });
});
