// Child process: an automerge-repo sync server (syncServerRepo: WebSocket on
// 127.0.0.1, NodeFS storage, sharePolicy false), driven by its parent over IPC.
// Running the server in its own process makes the two peers two processes, as
// two devices would be; it keeps each process's document count (which drives
// automerge-wasm's per-doc cost, see README) to one peer's; and it lets us
// measure the server's CPU time alone. Started by startSyncServer() in
// repo-common.mjs; not meant to be run directly.
//
// Usage: node sync-server.mjs STORAGE_DIR
// Child -> parent on start: { type: "ready", port }
// Requests: { id, op, ...args }; replies: { id, result } or { id, error }.
// The child exits when the IPC channel closes.

import { listenLoopback, WireCounter } from "./lib.mjs";
import { syncServerRepo } from "./repo-common.mjs";

if (!process.send || !process.argv[2]) {
  process.stderr.write("sync-server.mjs is started by startSyncServer() in repo-common.mjs\n");
  process.exit(2);
}

const { wss, port } = await listenLoopback();
const wire = new WireCounter();
wire.attach(wss);
const repo = syncServerRepo(wss, process.argv[2]);
let cpuStart = process.cpuUsage();

const ops = {
  /** Creates a doc with an empty text field. */
  async createText() {
    const handle = repo.create({ text: "" });
    await repo.flush([handle.documentId]);
    return { url: handle.url };
  },

  /** Sets `n` in each listed doc: changes = [[url, value], ...]. */
  async setN({ changes }) {
    const handles = await Promise.all(changes.map(([url]) => repo.find(url)));
    handles.forEach((h, k) => h.change((d) => { d.n = changes[k][1]; }));
    await repo.flush(handles.map((h) => h.documentId));
    return null;
  },

  async textLength({ url }) {
    const handle = await repo.find(url);
    return handle.doc().text.length;
  },

  async wireReset() {
    wire.reset();
    return null;
  },

  async wire() {
    return wire.snapshot();
  },

  /** Waits until no WebSocket message has crossed for `quietMs`. */
  async quiet({ quietMs }) {
    await wire.waitQuiet(quietMs);
    return wire.snapshot();
  },

  async cpuStart() {
    cpuStart = process.cpuUsage();
    return null;
  },

  /** User + system CPU since the last cpuStart, microseconds. */
  async cpu() {
    return process.cpuUsage(cpuStart);
  },
};

process.on("message", async ({ id, op, ...args }) => {
  try {
    if (!(op in ops)) throw new Error(`unknown op ${op}`);
    process.send({ id, result: await ops[op](args) });
  } catch (e) {
    process.send({ id, error: e?.stack ?? String(e) });
  }
});
process.on("disconnect", () => process.exit(0));

process.send({ type: "ready", port });
