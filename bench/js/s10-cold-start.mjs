// S10: cold start of an automerge-repo Repo over NodeFS storage holding N docs.
//
// Setup (untimed): N small docs {title: `doc ${i}`, n: i} are written into a
// fresh NodeFS storage dir by Repos in child processes (makeDocStore), so this
// process starts with a cold JIT and an empty NodeFS adapter cache.
// Timed: `new Repo({ storage })` (construct_ms), then find() every URL and
// await all of them ready (ms covers both). No network adapter. The OS page
// cache is warm (the files were just written), as it would be for a node
// restarted shortly after it stopped.

import path from "node:path";
import { Repo } from "@automerge/automerge-repo";
import { NodeFSStorageAdapter } from "@automerge/automerge-repo-storage-nodefs";
import { cli, run, emit, log, intOpt, tempDir, cleanupTempDirs, performance, ms, fail } from "./lib.mjs";
import { makeDocStore } from "./repo-common.mjs";

const USAGE = "node s10-cold-start.mjs [--docs 10000] [--quick]";

run("s10-cold-start", async () => {
  const opts = cli({ docs: { type: "string" } }, USAGE);
  const N = intOpt(opts, "docs", opts.quick ? 300 : 10_000);

  // --- setup (untimed)
  const dir = path.join(tempDir("s10"), "repo");
  const setupStart = performance.now();
  const urls = makeDocStore(dir, N);
  log(`s10: wrote ${N} docs in ${ms(performance.now() - setupStart)} ms (untimed)`);

  // --- timed
  const t0 = performance.now();
  const repo = new Repo({ storage: new NodeFSStorageAdapter(dir) });
  const t1 = performance.now();
  const handles = await Promise.all(urls.map((u) => repo.find(u)));
  const t2 = performance.now();

  // --- check (untimed)
  handles.forEach((h, i) => {
    if (h.doc().n !== i) fail(`doc ${i} loaded with wrong content ${JSON.stringify(h.doc())}`);
  });
  log(`s10: loaded ${N} docs in ${ms(t2 - t0)} ms (construct ${ms(t1 - t0)} ms)`);
  emit({ scenario: "S10", system: "automerge-repo", case: "cold-start", ms: ms(t2 - t0), construct_ms: ms(t1 - t0), docs: N });

  await repo.shutdown();
  cleanupTempDirs();
});
