// S4: reconnecting a client that already holds many documents.
//
// Two peers over loopback WebSocket, in two processes, each with NodeFS
// storage in a fresh temp dir: a sync server (sync-server.mjs, configured like
// automerge-repo-sync-server) in a child process, and a client in this one.
// Setup (untimed): N small docs {title, n} are written into the server's
// storage (makeDocStore), the server starts over it; a client finds every URL,
// waits until all are ready and confirmed in sync, then shuts down.
//
// Case "all-in-sync": a new client Repo over the same storage dir connects and
// find()s all N URLs, as an app opening its documents does.
// Case "changed": the client shuts down again, the server changes --changed
// docs, and a new client over the same storage reconnects and find()s all N.
//
// Timing starts just before `new Repo(...)` for the client. Two end points:
//   ready_ms: all N find() calls resolved (and, in "changed", every changed
//             value is visible). With automerge-repo 2.x, find() resolves as
//             soon as a doc is loaded from local storage, so this is mostly a
//             local load time and does not imply any sync happened.
//   ms:       additionally every one of the N docs is confirmed in sync, i.e.
//             the heads the server last reported (in a sync message) equal the
//             client's heads. This is when the reconnect is complete; the wire
//             counts (server-side WebSocket payloads, see WireCounter) are
//             taken at this point.

import path from "node:path";
import { cli, run, emit, log, intOpt, tempDir, cleanupTempDirs, performance, ms, fail } from "./lib.mjs";
import { startSyncServer, makeDocStore, clientRepo, whenHandle, whenConfirmedInSync, within, announcedServerStorageId, shutdownAndSettle } from "./repo-common.mjs";

const USAGE = "node s4-reconnect.mjs [--docs 10000] [--changed 100] [--quick]";
const BUMP = 1_000_000; // added to `n` of each changed doc

run("s4-reconnect", async () => {
  const opts = cli({ docs: { type: "string" }, changed: { type: "string" } }, USAGE);
  const N = intOpt(opts, "docs", opts.quick ? 300 : 10_000);
  const changed = intOpt(opts, "changed", opts.quick ? 10 : 100);
  if (changed > N) fail("--changed must not exceed --docs");

  // --- setup (untimed)
  const serverDir = path.join(tempDir("s4-server"), "repo");
  let t = performance.now();
  const urls = makeDocStore(serverDir, N);
  log(`s4: wrote ${N} docs into the server's storage in ${ms(performance.now() - t)} ms (untimed)`);
  const server = await startSyncServer(serverDir);

  const clientDir = tempDir("s4-client");
  t = performance.now();
  const first = clientRepo(server.port, clientDir);
  await syncAll(first, urls);
  log(`s4: initial sync of ${N} docs took ${ms(performance.now() - t)} ms (untimed)`);
  await closeClient(first, server);

  // --- case A: everything already in sync
  const a = await reconnect(server, clientDir, urls, () => true);
  emit({ scenario: "S4", system: "automerge-repo", case: "all-in-sync", ...a.result, docs: N });
  await closeClient(a.client, server);

  // --- case B: `changed` docs changed on the server while the client was away
  const stride = N / changed; // spread the changed docs evenly over the set
  const changedIdx = Array.from({ length: changed }, (_, k) => Math.floor(k * stride));
  await server.call("setN", { changes: changedIdx.map((i) => [urls[i], i + BUMP]) });
  const b = await reconnect(server, clientDir, urls, (handles) =>
    Promise.all(changedIdx.map((i) => whenHandle(handles[i], ["change"], () => handles[i].doc().n === i + BUMP))),
  );
  emit({ scenario: "S4", system: "automerge-repo", case: "changed", ...b.result, changed, docs: N });
  await closeClient(b.client, server);

  await server.close();
  cleanupTempDirs();
});

/**
 * find() every URL and wait until each is confirmed in sync with the server.
 * Setup only: in batches, because a client's request for a doc it does not
 * have turns "unavailable" after 60 s (DocHandle timeout), which 10,000
 * simultaneous requests can exceed on a slow machine.
 */
async function syncAll(client, urls, batch = 500) {
  for (let i = 0; i < urls.length; i += batch) {
    const handles = await Promise.all(urls.slice(i, i + batch).map((u) => client.find(u)));
    await waitAllInSync(client, handles);
  }
}

async function waitAllInSync(client, handles) {
  const sid = await announcedServerStorageId(client);
  let done = 0;
  await within(
    1_800_000,
    Promise.all(handles.map((h) => whenConfirmedInSync(h, sid).then(() => done++))),
    () => `only ${done}/${handles.length} docs confirmed in sync`,
  );
}

/**
 * Timed reconnect of a new client over `dir`. `extra(handles)` is an
 * additional condition for ready_ms (used for the changed values).
 */
async function reconnect(server, dir, urls, extra) {
  await server.call("quiet", { quietMs: 300 });
  await server.call("wireReset");
  const t0 = performance.now();
  const client = clientRepo(server.port, dir);
  const handles = await Promise.all(urls.map((u) => client.find(u)));
  await within(1_800_000, Promise.resolve(extra(handles)), () => "changed values never arrived");
  const t1 = performance.now();
  await waitAllInSync(client, handles);
  const t2 = performance.now();
  // The server counts until this request reaches it, a few ms after t2; the
  // exchange is over by then (compare wire_bytes_settled).
  const w = await server.call("wire");
  const settled = await server.call("quiet", { quietMs: 300 });
  log(`s4: reconnect ready ${ms(t1 - t0)} ms, in sync ${ms(t2 - t0)} ms, ${JSON.stringify(w)}`);
  const result = {
    ms: ms(t2 - t0),
    ready_ms: ms(t1 - t0),
    wire_bytes: w.wire_bytes,
    bytes_up: w.bytes_up,
    bytes_down: w.bytes_down,
    messages_up: w.messages_up,
    messages_down: w.messages_down,
    wire_bytes_settled: settled.wire_bytes,
  };
  return { client, result };
}

/**
 * Shuts a client down once the connection is quiet, and lets its storage
 * settle: automerge-repo persists docs and sync states through a 100 ms
 * throttle that shutdown() does not wait for.
 */
async function closeClient(client, server) {
  await server.call("quiet", { quietMs: 300 });
  await shutdownAndSettle(client);
}
