// automerge-repo setups shared by S3, S4, S5 and S10.

import fs from "node:fs";
import path from "node:path";
import { fork, execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { Repo } from "@automerge/automerge-repo";
import { WebSocketServerAdapter, WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket";
import { NodeFSStorageAdapter } from "@automerge/automerge-repo-storage-nodefs";
import { headsEqual, BenchError, sleep } from "./lib.mjs";

export const SERVER_PEER_ID = "sync-server";

/**
 * NodeFSStorageAdapter that tracks writes in flight. repo.shutdown()/flush()
 * await their own saves, but a throttled background save of the same doc can
 * still be writing (NodeFS writes are not atomic: the file is truncated, then
 * written). Before another Repo or process opens the same directory we wait
 * until no write is in flight, see whenStorageIdle().
 */
export class TrackedNodeFS extends NodeFSStorageAdapter {
  inFlight = 0;

  async save(key, data) {
    this.inFlight++;
    try {
      return await super.save(key, data);
    } finally {
      this.inFlight--;
    }
  }

  async remove(key) {
    this.inFlight++;
    try {
      return await super.remove(key);
    } finally {
      this.inFlight--;
    }
  }
}

/**
 * Resolves once `storage` has had no write in flight for `quietMs` (longer
 * than the repo's 100 ms save throttle, so no throttled save is pending).
 */
export async function whenStorageIdle(storage, quietMs = 300) {
  let idleSince = performance.now();
  for (;;) {
    await sleep(25);
    if (storage.inFlight > 0) idleSince = performance.now();
    else if (performance.now() - idleSince >= quietMs) return;
  }
}

/**
 * A sync server configured like the reference automerge-repo-sync-server:
 * NodeFS storage and sharePolicy false, i.e. it answers for documents a client
 * asks for by id but does not announce every document it holds to every client.
 */
export function syncServerRepo(wss, storageDir) {
  return withStorage(new TrackedNodeFS(storageDir), (storage) => new Repo({
    network: [new WebSocketServerAdapter(wss)],
    storage,
    peerId: SERVER_PEER_ID,
    sharePolicy: async () => false,
  }));
}

/** A client repo connecting to ws://127.0.0.1:port, NodeFS storage if a dir is given. */
export function clientRepo(port, storageDir) {
  return withStorage(storageDir ? new TrackedNodeFS(storageDir) : undefined, (storage) => new Repo({
    network: [new WebSocketClientAdapter(`ws://127.0.0.1:${port}`)],
    storage,
  }));
}

/** A repo with NodeFS storage only (no network). */
export function localRepo(storageDir) {
  return withStorage(new TrackedNodeFS(storageDir), (storage) => new Repo({ storage }));
}

// The Repo keeps its adapter private; we keep our own reference on the repo
// object (as `benchStorage`) to wait for its writes in shutdownAndSettle().
function withStorage(storage, make) {
  const repo = make(storage);
  repo.benchStorage = storage;
  return repo;
}

/** repo.shutdown(), then wait until its storage has no write in flight. */
export async function shutdownAndSettle(repo) {
  await repo.shutdown();
  if (repo.benchStorage) await whenStorageIdle(repo.benchStorage);
}

/** Resolves once `pred()` holds, re-checking on the given events of `handle`. */
export function whenHandle(handle, events, pred) {
  if (pred()) return Promise.resolve();
  return new Promise((resolve) => {
    const check = () => {
      if (!pred()) return;
      for (const e of events) handle.off(e, check);
      resolve();
    };
    for (const e of events) handle.on(e, check);
  });
}

/** Resolves once the handle's heads equal `heads`. */
export function whenHeads(handle, heads) {
  return whenHandle(handle, ["heads-changed"], () => headsEqual(handle.heads(), heads));
}

/**
 * Resolves once the client knows the server holds exactly the client's heads
 * for this document: the server's heads, as last reported to the client in a
 * sync message (handle.getSyncInfo(serverStorageId)), equal the local heads.
 * This is the point at which the client has confirmed it is in sync.
 */
export function whenConfirmedInSync(handle, serverStorageId) {
  return whenHandle(handle, ["heads-changed", "remote-heads"], () =>
    headsEqual(handle.getSyncInfo(serverStorageId)?.lastHeads, handle.heads()),
  );
}

/** Races `promise` against a timeout that fails with `what`. */
export async function within(ms, promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new BenchError(`timed out after ${ms} ms: ${what()}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The storage id the server announced to `client` (waits for the connection).
 * We take it from the client's view rather than serverRepo.storageId(): on a
 * fresh storage dir the Repo constructor and a concurrent storageId() call can
 * each generate and save a different id, and only the announced one is what
 * the client's sync info is keyed by.
 */
export async function announcedServerStorageId(client) {
  let id = client.getStorageIdOfPeer(SERVER_PEER_ID);
  while (!id) {
    await new Promise((resolve) => client.networkSubsystem.once("peer", resolve));
    id = client.getStorageIdOfPeer(SERVER_PEER_ID);
  }
  return id;
}

const here = (file) => fileURLToPath(new URL(file, import.meta.url));

/**
 * Starts sync-server.mjs in a child process over `storageDir`. Returns
 * { port, call(op, args), close() }; call() sends one request over IPC and
 * resolves with the result. The child's stdout goes to our stderr, because
 * our stdout carries only results.
 */
export async function startSyncServer(storageDir) {
  const child = fork(here("./sync-server.mjs"), [storageDir], { stdio: ["ignore", 2, 2, "ipc"] });
  const pending = new Map();
  let nextId = 0;
  let closing = false;
  let ready;
  const readyP = new Promise((resolve, reject) => { ready = { resolve, reject }; });
  child.on("message", (msg) => {
    if (msg.type === "ready") return ready.resolve(msg);
    const p = pending.get(msg.id);
    pending.delete(msg.id);
    if (msg.error) p?.reject(new BenchError(`sync server: ${msg.error}`));
    else p?.resolve(msg.result);
  });
  child.on("exit", (code, signal) => {
    if (closing) return;
    const err = new BenchError(`sync server exited unexpectedly (code ${code}, signal ${signal})`);
    ready.reject(err);
    for (const p of pending.values()) p.reject(err);
    pending.clear();
  });
  const { port } = await readyP;
  return {
    port,
    call(op, args = {}) {
      const id = nextId++;
      return new Promise((resolve, reject) => {
        pending.set(id, { resolve, reject });
        child.send({ id, op, ...args });
      });
    },
    async close() {
      closing = true;
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.disconnect();
      // A server busy with a backlog may not notice the disconnect for long.
      const killer = setTimeout(() => child.kill("SIGKILL"), 5_000);
      await exited;
      clearTimeout(killer);
    },
  };
}

/**
 * Writes N small docs {title: `doc ${i}`, n: i} into a NodeFS storage dir and
 * returns their URLs (index i = doc i). The docs are written by Repos in child
 * processes of at most `batch` docs each: automerge-wasm's per-doc cost grows
 * with the number of docs alive in one process (wasm memory growth triggers
 * V8 GCs whose cost grows with the heap), so one process creating 10,000 docs
 * takes many minutes, while batches stay linear. The result on disk is the
 * same: one snapshot per doc, written by Repo.
 */
export function makeDocStore(dir, N, batch = 1000) {
  const urls = [];
  for (let from = 0; from < N; from += batch) {
    const out = path.join(path.dirname(dir), `urls-${from}.json`);
    const count = Math.min(batch, N - from);
    execFileSync(process.execPath, [here("./make-docs.mjs"), "--dir", dir, "--from", String(from), "--count", String(count), "--out", out], {
      stdio: ["ignore", 2, 2],
    });
    urls.push(...JSON.parse(fs.readFileSync(out, "utf8")));
    fs.rmSync(out);
  }
  return urls;
}
