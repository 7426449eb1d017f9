// S1: replay a sequential editing trace into an Automerge (JS/wasm) text.
//
// One Automerge.change per trace transaction, each patch applied with
// Automerge.splice at ["text"]. Only the replay loop is timed; loading the
// trace, creating the document and verifying the result are not.

import { cli, run, emit, log, loadTrace, txnCount, initTraceDoc, applyTxns, expectedText, fail, performance, ms } from "./lib.mjs";

const USAGE = "node s1-trace.mjs --trace PATH [--txns N] [--quick]";

run("s1-trace", async () => {
  const opts = cli({ trace: { type: "string" }, txns: { type: "string" } }, USAGE);
  const trace = loadTrace(opts.trace);
  const n = txnCount(opts, trace);

  const start = initTraceDoc(trace);
  const t0 = performance.now();
  const doc = applyTxns(start, trace.txns, n);
  const t1 = performance.now();

  const text = doc.text;
  const expected = expectedText(trace, n);
  if (text !== expected) {
    fail(`final text differs from the expected text (got ${text.length} chars, expected ${expected.length})`);
  }
  log(`s1: replayed ${n}/${trace.txns.length} txns, text verified (${text.length} chars)`);
  emit({
    scenario: "S1",
    system: "automerge-js",
    case: "trace-replay",
    ms: ms(t1 - t0),
    txns: n,
    chars: [...text].length,
  });
});
