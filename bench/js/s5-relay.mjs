// S5: edit latency through an automerge-repo sync server with W live writers.
//
// The server (sync-server.mjs, configured like automerge-repo-sync-server)
// runs in a child process, so its CPU time can be measured with
// process.cpuUsage() there; it holds one shared text doc. The W
// writers are automerge-repo clients (WebSocketClientAdapter, no storage) in
// this process, all on that doc.
//
// Each writer appends one character every 1000/rate ms, for `seconds`
// (floor(seconds * rate) characters per writer; writers are staggered by
// period/W). Every character is a unique marker: code point BASE + id, where
// id = writer * perWriter + seq, and its send time (performance.now() just
// before handle.change) is stored in a table shared by all writers, which is
// possible because they live in one process.
// If the writers fall behind their timers (their replicas' work delays them), typing
// stops at twice its planned length; a record then says how much was typed, and
// keystrokes still undelivered 30 s after typing ended count as lower bounds
// (`complete: false`).
// Every other writer records the first time it sees each marker, from the
// patches of its handle's "change" event. latency = receive time - send time,
// over all (marker, receiving writer) pairs: samples = markers * (W - 1).
// ms is the whole run: from the first write until every writer has seen every
// marker. relay_cpu_ms is the server's user + system CPU over the same span.
//
// Note that automerge-repo throttles outgoing sync per document (100 ms, the
// DocSynchronizer's syncDebounceRate) on both the writer and the server, which
// is part of what is measured here.

import * as A from "@automerge/automerge";
import { cli, run, emit, log, intOpt, numOpt, fail, sleep, percentile, tempDir, cleanupTempDirs, performance, ms, resultsRecorded } from "./lib.mjs";
import { startSyncServer, clientRepo, within } from "./repo-common.mjs";

const USAGE = "node s5-relay.mjs [--writers 4] [--seconds 60] [--rate 6] [--quick]";
const BASE = 0x4e00; // CJK Unified Ideographs: 20,992 BMP code points, one UTF-16 unit each
const MAX_MARKERS = 0x9fff - BASE + 1;

run("s5-relay", async () => {
  const opts = cli({ writers: { type: "string" }, seconds: { type: "string" }, rate: { type: "string" } }, USAGE);
  const W = intOpt(opts, "writers", opts.quick ? 2 : 4);
  const seconds = numOpt(opts, "seconds", opts.quick ? 3 : 60);
  const rate = numOpt(opts, "rate", 6);
  if (W < 2) fail("--writers must be at least 2");
  const period = 1000 / rate;
  const perWriter = Math.floor(seconds * rate);
  const total = W * perWriter;
  if (perWriter < 1) fail("--seconds * --rate must be at least 1");
  if (total > MAX_MARKERS) fail(`too many markers (${total} > ${MAX_MARKERS}); lower --writers, --seconds or --rate`);

  // --- setup (untimed): server child, W connected writers holding the doc
  const server = await startSyncServer(tempDir("s5-server"));
  const { url } = await server.call("createText");
  const repos = [];
  const handles = [];
  for (let w = 0; w < W; w++) {
    const repo = clientRepo(server.port);
    repos.push(repo);
    handles.push(await repo.find(url));
  }
  log(`s5: ${W} writers connected to the relay`);

  const sendTime = new Float64Array(total).fill(NaN);
  const seen = handles.map(() => new Uint8Array(total));
  const latencies = [];
  // Set when the wait for delivery ends: later arrivals (while the relay's CPU and wire
  // counts are fetched) must not add samples beside the lower bounds filled in then.
  let frozen = false;
  handles.forEach((handle, w) => {
    handle.on("change", ({ patches }) => {
      if (frozen) return;
      const now = performance.now();
      for (const p of patches) {
        if (p.action !== "splice" || p.path[0] !== "text") continue;
        for (let i = 0; i < p.value.length; i++) {
          const id = p.value.charCodeAt(i) - BASE;
          if (id < 0 || id >= total || Math.floor(id / perWriter) === w || seen[w][id]) continue;
          seen[w][id] = 1;
          latencies.push(now - sendTime[id]);
        }
      }
    });
  });
  await sleep(500); // let the initial sync exchanges finish

  // --- timed run
  await server.call("wireReset");
  await server.call("cpuStart");
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  // Writers share this process's one thread with the replicas they keep: when applying
  // what arrives takes longer than the typing interval, their timers fire late. Typing
  // stops at twice its planned length; keystrokes not typed by then are not counted.
  const stopTypingAt = t0 + 2 * seconds * 1000;
  await Promise.all(handles.map((handle, w) => writeLoop(handle, w)));
  const written = sendTime.reduce((n, t) => n + (Number.isNaN(t) ? 0 : 1), 0);
  const expected = written * (W - 1);
  log(`s5: ${written} of ${total} markers written in ${Math.round(performance.now() - t0)} ms, waiting for delivery`);
  // A relay that falls behind is a result, not a failure: after 30 s more, each keystroke
  // still missing at a writer counts with the latency it has reached by then, a lower
  // bound, and the record says how many were delivered.
  const delivered = await within(30_000, until(() => latencies.length >= expected), () => "")
    .then(() => true)
    .catch(() => false);
  const t1 = performance.now();
  frozen = true;
  const reached = latencies.length;
  if (!delivered) {
    log(`s5: the relay fell behind: ${reached} of ${expected} deliveries after 30 s; the rest count as lower bounds`);
    seen.forEach((seenBy, w) => {
      for (let id = 0; id < total; id++) {
        if (Math.floor(id / perWriter) !== w && !seenBy[id] && !Number.isNaN(sendTime[id])) {
          seenBy[id] = 1;
          latencies.push(t1 - sendTime[id]);
        }
      }
    });
  }
  const writersCpu = process.cpuUsage(cpu0);
  const relayCpu = await server.call("cpu");
  const relayWire = await server.call("wire");

  const complete = delivered && written === total;
  // --- checks (untimed), when everything was typed and arrived
  if (complete) {
    const texts = handles.map((h) => h.doc().text);
    if (texts.some((t) => t.length !== total || t !== texts[0])) fail("writers ended with different texts");
    const relayLength = await server.call("textLength", { url });
    if (relayLength !== total) fail(`relay holds ${relayLength} chars, expected ${total}`);
  }

  emit({
    scenario: "S5",
    system: "automerge-repo",
    case: `writers-${W}`,
    ms: ms(t1 - t0),
    writers: W,
    p50_ms: ms(percentile(latencies, 50)),
    p99_ms: ms(percentile(latencies, 99)),
    // A loop, not Math.max(...latencies): spreading 80,000 samples overflows the stack.
    max_ms: ms(latencies.reduce((a, b) => Math.max(a, b), -Infinity)),
    samples: latencies.length,
    typed: written,
    planned: total,
    delivered: reached,
    expected,
    complete,
    relay_cpu_ms: ms((relayCpu.user + relayCpu.system) / 1000),
    writers_cpu_ms: ms((writersCpu.user + writersCpu.system) / 1000),
    relay_wire_bytes: relayWire.wire_bytes,
    rate,
    seconds,
  });

  resultsRecorded("s5-relay");
  // A relay still working through a backlog may take long to shut down: give it 10 s.
  const closed = Promise.all(repos.map((r) => r.shutdown())).then(() => server.close());
  await within(10_000, closed, () => "closing the writers and the relay").catch((err) => log(`s5: ${err.message}`));
  cleanupTempDirs();

  /** One writer: perWriter appends, one every `period` ms, staggered by writer. */
  function writeLoop(handle, w) {
    return new Promise((resolve) => {
      let seq = 0;
      const tick = () => {
        if (performance.now() > stopTypingAt) {
          clearInterval(timer);
          resolve();
          return;
        }
        const id = w * perWriter + seq;
        const ch = String.fromCharCode(BASE + id);
        sendTime[id] = performance.now();
        handle.change((d) => A.splice(d, ["text"], d.text.length, 0, ch));
        if (++seq === perWriter) {
          clearInterval(timer);
          resolve();
        }
      };
      let timer;
      setTimeout(() => {
        timer = setInterval(tick, period);
        tick();
      }, (w * period) / W);
    });
  }
});

/** Polls `pred` every 5 ms. */
async function until(pred) {
  while (!pred()) await sleep(5);
}
