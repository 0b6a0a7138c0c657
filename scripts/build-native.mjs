#!/usr/bin/env node
// Builds the CPU addon during `npm install`: fetches llama.cpp's headers from node-llama-cpp's bundled
// git bundle (offline, seconds), then compiles native/ with node-gyp against the prebuilt CPU libraries.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(path.join(root, 'package.json'));
const run = (cmd, args) => execFileSync(cmd, args, { cwd: root, stdio: 'inherit' });
const fail = (msg) => {
  console.error(`build-native: ${msg}`);
  process.exit(1);
};

const nlc = path.join(root, 'node_modules/node-llama-cpp');
if (!existsSync(nlc)) fail('node-llama-cpp is not installed (run npm install)');
if (!existsSync(path.join(nlc, 'llama/llama.cpp/include/llama.h'))) {
  console.log('build-native: unpacking llama.cpp sources from node-llama-cpp (offline)');
  run(process.execPath, [path.join(nlc, 'dist/cli/cli.js'), 'source', 'download', '--skipBuild']);
}
if (!existsSync(path.join(nlc, 'llama/llama.cpp/include/llama.h'))) fail('llama.cpp headers are still missing');

const bins = path.join(root, 'node_modules/@node-llama-cpp/linux-x64/bins/linux-x64');
if (!existsSync(path.join(bins, 'libllama.v0.4.0.so'))) {
  fail(
    `prebuilt llama.cpp CPU libraries not found in ${bins} (is @node-llama-cpp/linux-x64 installed? ` +
      'it is an optional dependency of node-llama-cpp and only exists for linux x64)',
  );
}

// npm hands lifecycle scripts its bundled node-gyp; outside npm, fall back to a local one.
const candidates = [
  process.env.npm_config_node_gyp,
  path.join(path.dirname(process.execPath), '../lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js'),
].filter(Boolean);
let gyp = candidates.find((p) => existsSync(p));
if (!gyp) {
  try {
    gyp = require.resolve('node-gyp/bin/node-gyp.js');
  } catch {
    fail('node-gyp not found: run this through npm (npm run build:native)');
  }
}
const jobs = String(Math.max(1, Math.min(4, (await import('node:os')).availableParallelism())));
run(process.execPath, [gyp, 'rebuild', '-j', jobs]);
console.log('build-native: built build/Release/cml_llama.node');
