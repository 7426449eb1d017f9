// Shared helpers for the peer-side benchmark scripts.
//
// Output contract (see README.md): stdout carries exactly one JSON object per
// measurement, one per line, and nothing else. Everything else goes to stderr.

import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import zlib from "node:zlib";
import { parseArgs } from "node:util";
import { performance } from "node:perf_hooks";
import * as A from "@automerge/automerge";
import { WebSocketServer } from "ws";

// automerge-repo logs a few error paths with console.log; keep stdout clean by
// sending every console.log to stderr. Measurements are written with emit().
console.log = console.error;

export { performance };

/** Writes one measurement as a single JSON line on stdout. */
export function emit(obj) {
  process.stdout.write(JSON.stringify({ ...obj, ...runInfo() }) + "\n");
}

export function log(...args) {
  console.error(...args);
}

/**
 * Parses command-line options (node:util parseArgs, strict). `options` uses the
 * parseArgs format; --quick and --help are always accepted.
 */
export function cli(options, usage) {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        ...options,
        quick: { type: "boolean", default: false },
        help: { type: "boolean", default: false },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (e) {
    fail(`${e.message}\nusage: ${usage}`);
  }
  if (values.help) {
    process.stderr.write(`usage: ${usage}\n`);
    process.exit(0);
  }
  return values;
}

/** Parses a strictly positive integer option, or returns `fallback` if absent. */
export function intOpt(values, name, fallback) {
  const raw = values[name];
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0) fail(`--${name} must be a positive integer, got ${JSON.stringify(raw)}`);
  return n;
}

/** Parses a strictly positive number option, or returns `fallback` if absent. */
export function numOpt(values, name, fallback) {
  const raw = values[name];
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0) fail(`--${name} must be a positive number, got ${JSON.stringify(raw)}`);
  return n;
}

export class BenchError extends Error {}

export function fail(msg) {
  throw new BenchError(msg);
}

/**
 * Called once a script's results are printed: an error while it closes down (a writer's
 * socket still reconnecting to a relay that fell behind, say) is noted on stderr, and no
 * longer turns a recorded measurement into a failed one.
 */
export function resultsRecorded(name) {
  const note = (err) => process.stderr.write(`${name}: while closing, after the results: ${err?.message ?? String(err)}\n`);
  for (const event of ["unhandledRejection", "uncaughtException"]) {
    process.removeAllListeners(event);
    process.on(event, note);
  }
}

/**
 * Runs `main` with error handling: exit 0 on success, 1 with a message on
 * stderr otherwise. A watchdog turns a hang into a failure. We exit explicitly
 * because repos and WebSocket adapters leave interval timers behind.
 */
export function run(name, main, { timeoutMs = 60 * 60_000 } = {}) {
  const die = (err) => {
    const msg = err instanceof BenchError ? err.message : (err?.stack ?? String(err));
    process.stderr.write(`${name}: FAILED: ${msg}\n`);
    process.exit(1);
  };
  process.on("unhandledRejection", die);
  process.on("uncaughtException", die);
  const watchdog = setTimeout(() => die(new BenchError(`timed out after ${timeoutMs / 1000} s`)), timeoutMs);
  watchdog.unref();
  main().then(
    () => process.exit(0),
    die,
  );
}

// ---------------------------------------------------------------- wasm memory

/**
 * Opt-in (BENCH_WASM_PREGROW_MB=N in the environment, inherited by child
 * processes): grow automerge-wasm's linear memory to about N MB up front, by
 * allocating throw-away documents and freeing them, so that its allocator
 * has a free pool and does not call memory.grow while the benchmark runs.
 *
 * Why: V8 counts wasm memory as external memory, and past its external-memory
 * limit every growth (and every small ArrayBuffer automerge-repo allocates,
 * e.g. in bs58check/sha256 when it encodes heads) triggers GC work whose cost
 * grows with the heap. With thousands of live docs in one process the per-doc
 * cost then climbs steeply (10,000 docs: minutes instead of seconds). Off by
 * default, so the scripts measure automerge-repo as shipped; with it on, the
 * results show the cost without this effect. Each script reports the setting
 * as `wasm_pregrow_mb` when it is on.
 */
export const WASM_PREGROW_MB = Number(process.env.BENCH_WASM_PREGROW_MB ?? 0) || 0;
if (WASM_PREGROW_MB > 0) {
  const start = process.memoryUsage().external;
  const hold = [];
  // A doc holding a 4 MiB byte array grows wasm memory by roughly 40 MiB.
  while (process.memoryUsage().external - start < WASM_PREGROW_MB * 2 ** 20) {
    hold.push(A.from({ b: new Uint8Array(4 * 2 ** 20) }));
  }
  for (const doc of hold) A.free(doc);
}

/** Fields to add to every result: the pregrow setting, when it is on. */
export const runInfo = () => (WASM_PREGROW_MB > 0 ? { wasm_pregrow_mb: WASM_PREGROW_MB } : {});

// ---------------------------------------------------------------- traces

/** Loads a sequential editing trace (gzip JSON) and checks its shape. */
export function loadTrace(file) {
  if (!file) fail("--trace PATH is required");
  let trace;
  try {
    trace = JSON.parse(zlib.gunzipSync(fs.readFileSync(file)).toString("utf8"));
  } catch (e) {
    fail(`cannot read trace ${file}: ${e.message}`);
  }
  if (typeof trace.endContent !== "string" || !Array.isArray(trace.txns) || trace.kind === "concurrent") {
    fail(`${file} is not a sequential trace ({startContent, endContent, txns})`);
  }
  trace.startContent ??= "";
  // Trace positions are Unicode code points, Automerge JS indexes text in
  // UTF-16 code units. They agree only when there is no surrogate pair, which
  // holds for the traces we use (automerge-paper is ASCII). Refuse otherwise
  // rather than silently replaying wrong positions.
  const surrogate = /[\uD800-\uDFFF]/;
  const astral =
    surrogate.test(trace.startContent) ||
    surrogate.test(trace.endContent) ||
    trace.txns.some((t) => t.patches.some((p) => surrogate.test(p[2])));
  if (astral) fail(`${file} contains characters outside the BMP; code point positions would need translation to UTF-16`);
  return trace;
}

/** Number of transactions to replay: --txns, else 5000 with --quick, else all. */
export function txnCount(values, trace) {
  const n = intOpt(values, "txns", values.quick ? 5000 : trace.txns.length);
  return Math.min(n, trace.txns.length);
}

/** A fresh Automerge doc holding the trace's start content at ["text"]. */
export function initTraceDoc(trace) {
  return A.from({ text: trace.startContent });
}

/** Applies the first n transactions, one Automerge change per transaction. */
export function applyTxns(doc, txns, n) {
  for (let i = 0; i < n; i++) {
    const patches = txns[i].patches;
    doc = A.change(doc, (d) => {
      for (const [pos, del, ins] of patches) A.splice(d, ["text"], pos, del, ins);
    });
  }
  return doc;
}

/**
 * The text the first n transactions should produce. For a full replay that is
 * endContent; for a prefix we replay on a plain JS string (BMP-only, so string
 * indexes equal code point positions).
 */
export function expectedText(trace, n) {
  if (n === trace.txns.length) return trace.endContent;
  let s = trace.startContent;
  for (let i = 0; i < n; i++) {
    for (const [pos, del, ins] of trace.txns[i].patches) s = s.slice(0, pos) + ins + s.slice(pos + del);
  }
  return s;
}

/** Builds the trace document (untimed helper for S3) and checks its text. */
export function buildTraceDoc(trace, n) {
  const doc = applyTxns(initTraceDoc(trace), trace.txns, n);
  if (doc.text !== expectedText(trace, n)) fail("replayed text differs from the expected text");
  return doc;
}

// ---------------------------------------------------------------- network

/** A ws server on 127.0.0.1, random port. Resolves once listening. */
export async function listenLoopback() {
  const wss = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  await new Promise((resolve, reject) => {
    wss.once("listening", resolve);
    wss.once("error", reject);
  });
  return { wss, port: wss.address().port };
}

/**
 * Counts WebSocket payload bytes and messages on the server side of every
 * connection: "up" = received by the server (client -> server), "down" = sent
 * by the server (server -> client). Only message payloads are counted (no
 * WebSocket framing, TCP/IP headers, or keep-alive ping/pong control frames).
 * In automerge-repo each WebSocket message is one CBOR-encoded repo message.
 */
export class WireCounter {
  constructor() {
    this.reset();
    this.lastActivity = performance.now();
  }

  reset() {
    this.bytesUp = 0;
    this.bytesDown = 0;
    this.messagesUp = 0;
    this.messagesDown = 0;
  }

  /** Must be called before any client connects. */
  attach(wss) {
    wss.on("connection", (socket) => {
      socket.on("message", (data) => {
        this.messagesUp++;
        this.bytesUp += byteLength(data);
        this.lastActivity = performance.now();
      });
      const send = socket.send.bind(socket);
      socket.send = (data, ...rest) => {
        this.messagesDown++;
        this.bytesDown += byteLength(data);
        this.lastActivity = performance.now();
        return send(data, ...rest);
      };
    });
  }

  snapshot() {
    return {
      wire_bytes: this.bytesUp + this.bytesDown,
      bytes_up: this.bytesUp,
      bytes_down: this.bytesDown,
      messages_up: this.messagesUp,
      messages_down: this.messagesDown,
    };
  }

  /** Resolves once no message has crossed for `quietMs` (or after maxMs). */
  async waitQuiet(quietMs = 300, maxMs = 10_000) {
    const start = performance.now();
    while (performance.now() - this.lastActivity < quietMs && performance.now() - start < maxMs) {
      await sleep(50);
    }
  }
}

function byteLength(data) {
  if (typeof data === "string") return Buffer.byteLength(data);
  if (Array.isArray(data)) return data.reduce((n, b) => n + b.byteLength, 0); // fragmented frames
  return data.byteLength;
}

// ---------------------------------------------------------------- misc

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A fresh temporary directory; removed by cleanupTempDirs(). */
const tempDirs = [];
export function tempDir(prefix) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `membrane-bench-${prefix}-`));
  tempDirs.push(dir);
  return dir;
}
export function cleanupTempDirs() {
  for (const dir of tempDirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
}

export function headsEqual(a, b) {
  if (!a || !b || a.length !== b.length) return false;
  const sa = [...a].sort();
  const sb = [...b].sort();
  return sa.every((h, i) => h === sb[i]);
}

/** Nearest-rank percentile (p in 0..100) of an array of numbers. */
export function percentile(values, p) {
  if (values.length === 0) return null;
  const sorted = Float64Array.from(values).sort();
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1];
}

/** Rounds a millisecond value for output (microsecond resolution). */
export const ms = (x) => Math.round(x * 1000) / 1000;
