#!/usr/bin/env node
// build.mjs: build plinth policy plugins written in TypeScript into WebAssembly
// components. One script for the examples (plugins/examples/js) and for projects made
// by `plinthctl plugin new --lang js`, which embeds a copy of this file.
//
//   node build.mjs [--out DIR]      (default DIR: dist)
//
// It reads the "plinth" section of package.json:
//   { "wit": "wit/policy.wit",
//     "plugins": [{ "name": "my-pricing", "world": "pricing-plugin", "source": "src/plugin.ts" }] }
// and, for each plugin, (1) generates TypeScript declarations of the WIT world with
// `jco guest-types` into types/, (2) type-checks and compiles every .ts file with `tsc`
// (tsconfig.json, output in build/), (3) turns the compiled module into a component with
// `componentize-js` (the StarlingMonkey engine, pre-initialised by Wizer: top-level
// code runs now, at build time) as DIR/NAME.wasm. A component newer than every input
// (sources, WIT, package.json, package-lock.json, this script) is left as it is.
// stdio and wasi:http are left out (`--disable stdio http fetch-event`): with stdio the
// engine imports wasi:filesystem, which the plinth host refuses, and so it does
// wasi:http. Without stdio, `console.log` writes nothing: log through the host
// (`log`/`info`/... of plinth.ts). Uncaught errors still go to stderr, which
// `plinthctl plugin test` shows.

import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';

const project = process.cwd();

function fail(message) {
  console.error(`build.mjs: ${message}`);
  process.exit(1);
}

const [major] = process.versions.node.split('.').map(Number);
if (major < 18) {
  fail(`Node.js ${process.versions.node} is too old: componentize-js needs Node.js 18 or newer`);
}

let outDir = 'dist';
for (let index = 2; index < process.argv.length; index++) {
  const argument = process.argv[index];
  if (argument === '--out' && index + 1 < process.argv.length) {
    outDir = process.argv[++index];
  } else {
    fail(`unknown argument ${JSON.stringify(argument)} (usage: node build.mjs [--out DIR])`);
  }
}
outDir = resolve(project, outDir);

const manifestPath = join(project, 'package.json');
let settings;
try {
  settings = JSON.parse(readFileSync(manifestPath, 'utf8')).plinth;
} catch (error) {
  fail(`cannot read ${manifestPath}: ${error.message}`);
}
if (!settings || typeof settings.wit !== 'string' || !Array.isArray(settings.plugins)) {
  fail(`${manifestPath}: needs a "plinth" section with "wit" and "plugins"`);
}
const wit = resolve(project, settings.wit);
if (!existsSync(wit)) {
  fail(`${manifestPath}: plinth.wit: ${wit} does not exist`);
}
for (const [index, plugin] of settings.plugins.entries()) {
  for (const field of ['name', 'world', 'source']) {
    if (typeof plugin[field] !== 'string' || plugin[field] === '') {
      fail(`${manifestPath}: plinth.plugins[${index}].${field} is missing`);
    }
  }
  if (!/^[A-Za-z0-9._-]{1,64}$/.test(plugin.name)) {
    fail(`${manifestPath}: plinth.plugins[${index}].name ${JSON.stringify(plugin.name)} is not [A-Za-z0-9._-]{1,64}`);
  }
  if (!plugin.source.endsWith('.ts') && !plugin.source.endsWith('.js')) {
    fail(`${manifestPath}: plinth.plugins[${index}].source must be a .ts or .js file`);
  }
}

function tool(name) {
  const path = join(project, 'node_modules', '.bin', name);
  if (!existsSync(path)) {
    fail(`${path} is missing: run \`npm ci\` (or \`npm install\`) in ${project} first`);
  }
  return path;
}

function run(command, args) {
  const shown = [relative(project, command), ...args].join(' ');
  console.log(`build.mjs: ${shown}`);
  const result = spawnSync(command, args, { cwd: project, stdio: 'inherit' });
  if (result.error) {
    fail(`cannot run ${shown}: ${result.error.message}`);
  }
  if (result.status !== 0) {
    fail(`${shown} failed (exit status ${result.status ?? result.signal})`);
  }
}

const skipped = new Set(['node_modules', 'build', 'dist', 'types', '.git']);
function sources(dir, found = []) {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) {
      if (!skipped.has(entry.name) && path !== outDir) {
        sources(path, found);
      }
    } else if (/\.(ts|js|mjs|json)$/.test(entry.name)) {
      found.push(path);
    }
  }
  return found;
}
const mtime = (path) => (existsSync(path) ? statSync(path).mtimeMs : 0);
const newestInput = Math.max(
  mtime(wit),
  mtime(join(project, 'node_modules', '.package-lock.json')),
  ...sources(project).map(mtime),
);
const outputs = settings.plugins.map((plugin) => join(outDir, `${plugin.name}.wasm`));
if (outputs.every((path) => mtime(path) > newestInput)) {
  console.log(`build.mjs: ${outputs.length} component(s) in ${outDir} are up to date`);
  process.exit(0);
}

// 1. TypeScript declarations of every world used, from the WIT.
const worlds = [...new Set(settings.plugins.map((plugin) => plugin.world))];
for (const world of worlds) {
  run(tool('jco'), ['guest-types', wit, '--world-name', world, '--out-dir', 'types', '--quiet']);
}
// 2. Type-check and compile.
run(tool('tsc'), ['-p', 'tsconfig.json']);
// 3. One component per plugin.
mkdirSync(outDir, { recursive: true });
for (const [index, plugin] of settings.plugins.entries()) {
  const compiled = join(project, 'build', plugin.source.replace(/\.ts$/, '.js'));
  if (!existsSync(compiled)) {
    fail(`tsc did not produce ${compiled}: check "outDir": "build" and "rootDir": "." in tsconfig.json`);
  }
  mkdirSync(dirname(outputs[index]), { recursive: true });
  // Written under another name and renamed, so that an interrupted build never leaves
  // a truncated component that looks up to date.
  const partial = `${outputs[index]}.partial`;
  run(tool('componentize-js'), [
    compiled,
    '--wit',
    wit,
    '--world-name',
    plugin.world,
    '--disable',
    'stdio',
    'http',
    'fetch-event',
    '--out',
    partial,
  ]);
  renameSync(partial, outputs[index]);
}
console.log(`build.mjs: built ${outputs.map((path) => relative(project, path)).join(', ')}`);
