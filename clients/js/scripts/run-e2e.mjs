// Runs the end-to-end tests: builds the relay once (go build ./cmd/relay), then
// `node --test` over test/e2e/*.test.mjs, one file at a time.
//
// The run fails (exit 1) when Chromium or Go is missing, the relay does not
// build, any test fails, is skipped, todo or cancelled, no test ran at all, or
// the whole run takes longer than E2E_TIMEOUT_MS (default 600000): the e2e
// tests never pass by skipping.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CHROMIUM, JS_ROOT, assertChromium, goBuildRelay } from '../test/e2e/harness.mjs';

const started = Date.now();
const fail = (msg) => {
  console.error(`\ne2e: FAILED: ${msg}`);
  process.exit(1);
};

try {
  assertChromium();
} catch (e) {
  fail(e.message);
}
if (!existsSync(join(JS_ROOT, 'dist/index.mjs'))) fail('dist/ is missing: run `npm run build` first');

const work = mkdtempSync(join(tmpdir(), 'relay-e2e-run-'));
process.on('exit', () => rmSync(work, { recursive: true, force: true }));
const relayBin = join(work, 'relay');
console.log('e2e: building the relay (go build ./cmd/relay)…');
try {
  await goBuildRelay(relayBin);
} catch (e) {
  fail(e.message);
}

const dir = join(JS_ROOT, 'test/e2e');
const files = readdirSync(dir)
  .filter((f) => f.endsWith('.test.mjs'))
  .sort()
  .map((f) => join(dir, f));
if (files.length === 0) fail(`no test files in ${dir}`);

const tap = join(work, 'report.tap');
const child = spawn(
  process.execPath,
  [
    '--test',
    '--test-concurrency=1',
    '--test-reporter=spec',
    '--test-reporter-destination=stdout',
    '--test-reporter=tap',
    `--test-reporter-destination=${tap}`,
    ...files,
  ],
  {
    cwd: JS_ROOT,
    stdio: 'inherit',
    detached: true, // own process group, so a hung run can be killed as a whole
    env: { ...process.env, RELAY_BIN: relayBin, CHROMIUM_PATH: CHROMIUM },
  },
);
const limit = Number(process.env.E2E_TIMEOUT_MS || 600000);
let timedOut = false;
const timer = setTimeout(() => {
  timedOut = true;
  try {
    process.kill(-child.pid, 'SIGKILL');
  } catch {
    // already gone
  }
}, limit);
const code = await new Promise((r) => child.on('exit', (c, signal) => r(c ?? signal)));
clearTimeout(timer);
if (timedOut) fail(`the run took longer than ${limit} ms and was killed (E2E_TIMEOUT_MS)`);

const report = existsSync(tap) ? readFileSync(tap, 'utf8') : '';
const count = (name) => {
  const m = new RegExp(`^# ${name} (\\d+)$`, 'm').exec(report);
  return m ? Number(m[1]) : NaN;
};
const totals = Object.fromEntries(['tests', 'pass', 'fail', 'cancelled', 'skipped', 'todo'].map((k) => [k, count(k)]));
const seconds = ((Date.now() - started) / 1000).toFixed(1);
if (code !== 0) fail(`node --test exited with ${code} (${JSON.stringify(totals)})`);
if (!(totals.tests > 0)) fail(`no tests ran (${JSON.stringify(totals)})`);
if (totals.skipped || totals.todo || totals.cancelled || totals.fail || totals.pass !== totals.tests) {
  fail(`every e2e test must run and pass: ${JSON.stringify(totals)}`);
}
console.log(`\ne2e: ${totals.pass}/${totals.tests} tests passed in ${files.length} files, ${seconds} s in all`);
