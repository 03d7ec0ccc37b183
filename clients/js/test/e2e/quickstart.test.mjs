// README's quick start as a script (examples/quickstart.mjs at the repo root),
// run with this Node.js against a real relay on the shipped relay.yaml: it
// prints both sides' frames and exits 0. Without a WebSocket it can use, it
// says what it needs and exits 1 instead of failing with "WebSocket is not
// defined".
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT, shippedConfig, startRelay } from './harness.mjs';

const SCRIPT = join(REPO_ROOT, 'examples/quickstart.mjs');

/** Runs node with args; resolves with {code, stdout, stderr} (never rejects on a non-zero exit). */
function runNode(args) {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, args, { timeout: 30000 }, (err, stdout, stderr) => {
      if (err && typeof err.code !== 'number') return reject(new Error(`${err.message}\n${stderr}`));
      resolve({ code: err ? err.code : 0, stdout, stderr });
    });
  });
}

test('the quick start script shows both sides of a token and exits 0', { timeout: 60000 }, async (t) => {
  const relay = await startRelay(t, shippedConfig());
  const { code, stdout, stderr } = await runNode([SCRIPT, relay.url]);
  assert.equal(code, 0, `exit ${code}\nstdout:\n${stdout}\nstderr:\n${stderr}`);
  const lines = stdout.trim().split('\n');
  const frames = lines.map((l) => {
    const m = /^(h5|miniapp) got (.*)$/.exec(l);
    assert.ok(m, `unexpected line ${l}`);
    return { env: m[1], frame: JSON.parse(m[2]) };
  });
  const got = (env, type) => frames.filter((f) => f.env === env && f.frame.type === type).map((f) => f.frame);
  assert.equal(got('h5', 'relay.hello').length, 1);
  assert.equal(got('miniapp', 'relay.hello').length, 1);
  assert.deepEqual(got('h5', 'relay.presence')[0].data, { env: 'miniapp', online: true });
  const [greet] = got('h5', 'greet');
  assert.deepEqual([greet.data, greet.from, greet.id], [{ text: 'hi' }, 'miniapp', 'm-1']);
  const [reply] = got('miniapp', 'reply');
  assert.deepEqual([reply.data, reply.from], ['hello', 'h5']);
  assert.deepEqual(got('miniapp', 'relay.ack')[0].data, { id: 'm-1', seq: greet.seq });
  assert.equal(stderr, '');
});

test('without a WebSocket to use, the quick start script says what it needs and exits 1', { timeout: 60000 }, async (t) => {
  // A copy away from clients/js cannot fall back on its `ws` package; Node.js 22
  // and later lose their built-in WebSocket with --no-experimental-websocket.
  const dir = mkdtempSync(join(tmpdir(), 'relay-quickstart-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const copy = join(dir, 'quickstart.mjs');
  copyFileSync(SCRIPT, copy);
  const flags = typeof WebSocket === 'undefined' ? [] : ['--no-experimental-websocket'];
  const { code, stdout, stderr } = await runNode([...flags, copy, 'ws://127.0.0.1:9/socket']);
  assert.equal(code, 1, `exit ${code}\nstderr:\n${stderr}`);
  assert.equal(stdout, '');
  assert.match(stderr, /has no built-in WebSocket \(Node\.js 22 and later have one\)/);
  assert.match(stderr, /npm ci` in clients\/js/);
  assert.doesNotMatch(stderr, /is not defined/);
});

test('with no relay listening, the quick start script says so and exits 1', { timeout: 60000 }, async () => {
  // A port that was just free: nothing listens on it.
  const server = net.createServer();
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address();
  await new Promise((r) => server.close(r));
  const { code, stderr } = await runNode([SCRIPT, `ws://127.0.0.1:${port}/socket`]);
  assert.equal(code, 1, `exit ${code}\nstderr:\n${stderr}`);
  assert.match(stderr, /cannot connect to ws:\/\/127\.0\.0\.1:\d+\/socket: is relay running/);
});
