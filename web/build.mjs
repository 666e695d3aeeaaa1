// Builds flowray's third-party web assets into ../flowray/web/static/vendor/:
//   editor.js     CodeMirror 6 for flow YAML (src/editor.js), one minified ES module
//   plot.js       uPlot (src/plot.js), one minified ES module
//   uplot.css     uPlot's stylesheet, copied from the package
//   LICENSES.txt  the licence of every npm package whose code is in editor.js or plot.js
//
// Run by build.sh after `npm ci`. The output depends only on the sources and the locked
// packages (no timestamps, no absolute paths, everything sorted): a rebuild from the same
// package-lock.json gives the same bytes, so `git diff` after a rebuild shows real changes only.
import { build } from "esbuild";
import { copyFileSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const HERE = dirname(fileURLToPath(import.meta.url));
const OUT = join(HERE, "..", "flowray", "web", "static", "vendor");
const ENTRIES = { editor: "src/editor.js", plot: "src/plot.js" };

// "node_modules/@scope/name/dist/x.js" -> "@scope/name" (the innermost node_modules wins,
// so a nested copy of a package is attributed to itself, not to its parent).
function packageOf(input) {
  const parts = input.split("/");
  const at = parts.lastIndexOf("node_modules");
  if (at < 0) return null;
  const first = parts[at + 1];
  return first.startsWith("@") ? { name: `${first}/${parts[at + 2]}`, dir: parts.slice(0, at + 3).join("/") }
    : { name: first, dir: parts.slice(0, at + 2).join("/") };
}

function readJson(path) {
  return JSON.parse(readFileSync(path, "utf8"));
}

// The package's own licence file: LICENSE, LICENCE, LICENSE.md, COPYING, ... A package
// without one stops the build: its notice could not be shipped.
function licenceText(dir) {
  const names = readdirSync(join(HERE, dir)).filter((f) => /^(licen[cs]e|copying)(\.|-|$)/i.test(f));
  if (names.length === 0) throw new Error(`${dir} has no LICENSE file: cannot ship its notice`);
  return names.sort().map((f) => readFileSync(join(HERE, dir, f), "utf8").trimEnd()).join("\n\n");
}

function repositoryOf(pkg) {
  const repo = typeof pkg.repository === "string" ? pkg.repository : pkg.repository?.url;
  return (repo ?? pkg.homepage ?? "").replace(/^git\+/, "").replace(/\.git$/, "");
}

const result = await build({
  absWorkingDir: HERE,
  entryPoints: ENTRIES,
  outdir: "out",
  bundle: true,
  format: "esm",
  target: ["es2020"],
  minify: true,
  sourcemap: false,
  legalComments: "none", // the notices go to LICENSES.txt, named in each bundle's banner
  metafile: true,
  write: false,
  logLevel: "warning",
});

// Which packages each bundle holds: the metafile's inputs that kept bytes in the output
// (tree-shaken modules are listed with 0 bytes: their package is not in the bundle).
const packages = new Map(); // name -> { name, version, license, dir, repository, bundles: Set }
const bundleOf = new Map(); // output file name -> sorted package names
for (const [outPath, output] of Object.entries(result.metafile.outputs)) {
  const file = outPath.split("/").pop();
  const names = new Set();
  for (const [input, info] of Object.entries(output.inputs)) {
    if (info.bytesInOutput === 0) continue;
    const owner = packageOf(input);
    if (owner === null) continue; // our own src/ files
    const pkg = readJson(join(HERE, owner.dir, "package.json"));
    const entry = packages.get(owner.name) ?? {
      name: owner.name,
      version: pkg.version,
      license: pkg.license ?? "UNKNOWN",
      dir: owner.dir,
      repository: repositoryOf(pkg),
      bundles: new Set(),
    };
    entry.bundles.add(file);
    packages.set(owner.name, entry);
    names.add(owner.name);
  }
  bundleOf.set(file, [...names].sort());
}

rmSync(OUT, { recursive: true, force: true });
mkdirSync(OUT, { recursive: true });

for (const output of result.outputFiles) {
  const file = output.path.split("/").pop();
  const credits = bundleOf.get(file).map((n) => `${n} ${packages.get(n).version}`).join(", ");
  const banner = `/*! flowray vendor bundle ${file}, built by web/build.mjs from: ${credits}. ` +
    `Licences and copyright notices: LICENSES.txt next to this file. */\n`;
  writeFileSync(join(OUT, file), banner + output.text);
}
copyFileSync(join(HERE, "node_modules", "uplot", "dist", "uPlot.min.css"), join(OUT, "uplot.css"));
packages.get("uplot").bundles.add("uplot.css");

// Packages the lockfile installs for the bundles (not dev tools) whose code was tree-shaken
// away entirely: named at the end so that a reader (and tests/test_web_assets.py) can tell
// "not bundled" from "forgotten".
const lock = readJson(join(HERE, "package-lock.json"));
const installed = Object.entries(lock.packages)
  .filter(([key, info]) => key !== "" && !info.dev)
  .map(([key]) => packageOf(key).name);
const unbundled = [...new Set(installed)].filter((n) => !packages.has(n)).sort();

const RULE = "=".repeat(78);
const lines = [
  "Third-party software in flowray/web/static/vendor/",
  "",
  "Generated by web/build.mjs from web/node_modules (see web/README.md); do not edit.",
  "Each section: the npm package, its version, its licence (SPDX id from its package.json),",
  "the bundles holding its code, and the text of its licence file.",
  "",
];
for (const name of [...packages.keys()].sort()) {
  const p = packages.get(name);
  lines.push(
    RULE,
    `Package: ${p.name}`,
    `Version: ${p.version}`,
    `License: ${p.license}`,
    `Source: ${p.repository}`,
    `Bundled in: ${[...p.bundles].sort().join(", ")}`,
    "",
    licenceText(p.dir),
    "",
  );
}
lines.push(
  RULE,
  "Installed for the bundles but not in them (tree-shaken away entirely):",
  unbundled.length ? unbundled.map((n) => `  ${n}`).join("\n") : "  (none)",
  "",
);
writeFileSync(join(OUT, "LICENSES.txt"), lines.join("\n"));
