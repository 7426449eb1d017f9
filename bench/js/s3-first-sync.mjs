// S3: first sync of a large document to a new automerge-repo client.
//
// Untimed setup: build the trace document exactly as in S1, save it, and start
// a sync server (WebSocketServerAdapter on 127.0.0.1, NodeFS storage) holding it
// via repo.import(). Timed: from constructing the client Repo (with a
// WebSocketClientAdapter and its own empty NodeFS storage) until the client's
// handle for the URL is ready AND its heads equal the server's heads.
//
// Wire accounting is on the server side of the WebSocket (see WireCounter):
//   messages_up   = WebSocket messages client -> server (including the join),
//   messages_down = WebSocket messages server -> client (including peer),
//   round_trips   = messages_up, i.e. the number of client -> server messages
//                   (each is answered by the server, so it bounds the number of
//                   request/response exchanges),
//   wire_bytes    = payload bytes both ways, counted until the timed end.
// wire_bytes_settled additionally includes any trailing messages exchanged
// after the timed end until the connection is quiet for 300 ms.

import * as A from "@automerge/automerge";
import { cli, run, emit, log, loadTrace, txnCount, buildTraceDoc, listenLoopback, WireCounter, tempDir, cleanupTempDirs, performance, ms } from "./lib.mjs";
import { syncServerRepo, clientRepo, whenHeads, within } from "./repo-common.mjs";

const USAGE = "node s3-first-sync.mjs --trace PATH [--txns N] [--quick]";

run("s3-first-sync", async () => {
  const opts = cli({ trace: { type: "string" }, txns: { type: "string" } }, USAGE);
  const trace = loadTrace(opts.trace);
  const n = txnCount(opts, trace);

  // --- setup (untimed)
  const doc = buildTraceDoc(trace, n);
  const saved = A.save(doc);
  log(`s3: built doc from ${n} txns, saved ${saved.length} bytes`);

  const { wss, port } = await listenLoopback();
  const wire = new WireCounter();
  wire.attach(wss);
  const server = syncServerRepo(wss, tempDir("s3-server"));
  const serverHandle = server.import(saved);
  await serverHandle.whenReady();
  await server.flush();
  const serverHeads = serverHandle.heads();
  const url = serverHandle.url;

  // --- timed: new client until it holds the server's heads
  const t0 = performance.now();
  const client = clientRepo(port, tempDir("s3-client"));
  const handle = await client.find(url);
  await within(600_000, whenHeads(handle, serverHeads), () => "client never reached the server's heads");
  const t1 = performance.now();
  const atEnd = wire.snapshot();

  // --- checks and trailing traffic (untimed)
  if (handle.doc().text !== doc.text) throw new Error("client text differs from the server's");
  await wire.waitQuiet(300);
  const settled = wire.snapshot();
  log(`s3: synced in ${ms(t1 - t0)} ms; ${JSON.stringify(atEnd)}`);

  emit({
    scenario: "S3",
    system: "automerge-repo",
    case: "first-sync",
    ms: ms(t1 - t0),
    wire_bytes: atEnd.wire_bytes,
    bytes_up: atEnd.bytes_up,
    bytes_down: atEnd.bytes_down,
    messages_up: atEnd.messages_up,
    messages_down: atEnd.messages_down,
    round_trips: atEnd.messages_up,
    saved_bytes: saved.length,
    wire_bytes_settled: settled.wire_bytes,
    txns: n,
  });

  await client.shutdown();
  await server.shutdown();
  wss.close();
  cleanupTempDirs();
});
