// Helper (not a benchmark): writes small docs {title: `doc ${i}`, n: i} for
// i in [from, from + count) into a NodeFS storage dir through a Repo, shuts it
// down, waits until no write is in flight, and writes the URLs as a JSON array
// to --out. Used by makeDocStore() in repo-common.mjs, which runs it in
// batches; see there for why.

import fs from "node:fs";
import { cli, run, intOpt, fail } from "./lib.mjs";
import { localRepo, shutdownAndSettle } from "./repo-common.mjs";

run("make-docs", async () => {
  const opts = cli(
    { dir: { type: "string" }, from: { type: "string" }, count: { type: "string" }, out: { type: "string" } },
    "node make-docs.mjs --dir DIR --from I --count K --out URLS.json",
  );
  if (!opts.dir || !opts.out) fail("--dir and --out are required");
  const from = opts.from === undefined ? 0 : Number(opts.from);
  if (!Number.isInteger(from) || from < 0) fail("--from must be a non-negative integer");
  const count = intOpt(opts, "count", 1);

  const repo = localRepo(opts.dir);
  const urls = [];
  for (let i = from; i < from + count; i++) urls.push(repo.create({ title: `doc ${i}`, n: i }).url);
  await shutdownAndSettle(repo);
  fs.writeFileSync(opts.out, JSON.stringify(urls));
});
