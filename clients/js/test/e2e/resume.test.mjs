// The SDK's cursor against the real relay's seq semantics: seq is clock based
// (large, never 0/1), relay.hello.seq is the cursor of a live-only session,
// `since` resumes, and `resumed:false` after `since` means resync.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createClient, wxSocketFactory } from '../../dist/index.mjs';
import { createWx } from '../wx-shim.mjs';
import { freshToken, sleep, startForwarder, startRelay, testConfig, waitFor } from './harness.mjs';

/** An SDK client over its own wx shim (so the test can drop its socket), recording what it sees. */
function client(t, url, token, env, options = {}) {
  const wx = createWx();
  const c = createClient({ url, token, env, socket: wxSocketFactory(wx), lifecycle: false, ...options });
  const rec = { c, wx, got: [], hellos: [], resyncs: [] };
  c.onAny((m) => rec.got.push(m));
  c.on('relay.hello', (m) => rec.hellos.push(m.data));
  c.onResync((h) => rec.resyncs.push(h));
  t.after(() => {
    c.close();
    wx.__shim.closeAll();
  });
  return rec;
}

const open = (r, what, timeout = 10000) => waitFor(() => r.c.state === 'open', what, timeout);
const reconnected = (r, n, what) => waitFor(() => r.c.state === 'open' && r.hellos.length >= n, what, 10000);

test('a new token: relay.hello.seq is a large clock-based cursor, and a resume from it is complete (also for a persisted cursor)', { timeout: 30000 }, async (t) => {
  const relay = await startRelay(t, testConfig());
  const token = freshToken('fresh');
  const before = Date.now();
  const h5 = client(t, relay.url, token, 'h5');
  await open(h5, 'h5 to connect');
  const hello = h5.hellos[0];
  assert.equal(hello.resumed, false);
  assert.ok(Number.isSafeInteger(hello.seq), 'a safe integer');
  assert.ok(hello.seq >= (before - 1000) * 1000 && hello.seq < 2 ** 53, `seq ${hello.seq} starts from the clock`);
  assert.equal(h5.c.lastSeq, hello.seq, 'a live-only session takes relay.hello.seq as its cursor');
  assert.equal(typeof hello.heartbeat, 'number');

  // dropped before any message: the resume from the hello's seq is complete
  h5.wx.__shim.closeAll();
  await reconnected(h5, 2, 'h5 to reconnect');
  assert.equal(h5.hellos[1].resumed, true);
  assert.deepEqual(h5.resyncs, []);

  // messages, then an "app restart" that resumes from the persisted lastSeq
  const mini = client(t, relay.url, token, 'miniapp');
  await open(mini, 'miniapp to connect');
  await mini.c.send('note', { n: 1 });
  await waitFor(() => h5.got.length === 1, 'h5 to get n=1');
  const persisted = h5.c.lastSeq;
  assert.equal(persisted, h5.got[0].seq);
  h5.c.close();
  for (let n = 2; n <= 4; n++) await mini.c.send('note', { n }, { to: ['h5'] }); // h5 is offline: kept in the history
  const again = client(t, relay.url, token, 'h5', { since: persisted });
  await open(again, 'the restarted h5');
  assert.equal(again.hellos[0].resumed, true);
  await waitFor(() => again.got.length === 3, 'the three messages sent while h5 was closed');
  assert.deepEqual(again.got.map((m) => m.data.n), [2, 3, 4]);
  assert.deepEqual(again.resyncs, []);
});

test('a gap larger than the history: resumed:false, onResync, the cursor moves to relay.hello.seq and live traffic continues', { timeout: 30000 }, async (t) => {
  const relay = await startRelay(t, testConfig({ history: { size: 3 } }));
  const token = freshToken('gap');
  // a reconnect waits 500 ms (base 1000 × random 0.5)
  const h5 = client(t, relay.url, token, 'h5', { backoffBase: 1000, random: () => 0.5 });
  const mini = client(t, relay.url, token, 'miniapp');
  await open(h5, 'h5');
  await open(mini, 'miniapp');
  await mini.c.send('note', { n: 1 });
  await waitFor(() => h5.got.length === 1, 'n=1');
  h5.wx.__shim.closeAll();
  await waitFor(() => h5.c.state === 'reconnecting', 'h5 to notice the drop');
  let lastSent;
  for (let n = 2; n <= 7; n++) lastSent = await mini.c.send('note', { n }, { to: ['h5'] });
  await reconnected(h5, 2, 'h5 to reconnect');
  const hello = h5.hellos[1];
  assert.equal(hello.resumed, false, 'the history (3 messages) no longer covers the gap');
  assert.equal(h5.resyncs.length, 1);
  assert.equal(hello.seq, lastSent.seq);
  assert.equal(h5.c.lastSeq, hello.seq);
  await sleep(200);
  assert.equal(h5.got.length, 1, 'nothing is replayed after resumed:false');
  await mini.c.send('note', { n: 8 });
  await waitFor(() => h5.got.length === 2, 'live traffic after the resync');
  assert.equal(h5.got[1].data.n, 8);
  assert.equal(await relay.metric('relay_resumes_total{resumed="false"}'), 1);
});

test('a relay restart: resumed:false, and the new clock-based seqs are above the old ones, so nothing new is dropped', { timeout: 60000 }, async (t) => {
  const relay1 = await startRelay(t, testConfig());
  const fwd = await startForwarder(t, relay1.port);
  const url = `ws://127.0.0.1:${fwd.port}/socket`;
  const token = freshToken('restart');
  const h5 = client(t, url, token, 'h5', { backoffBase: 200 });
  const mini = client(t, url, token, 'miniapp', { backoffBase: 200 });
  await open(h5, 'h5');
  await open(mini, 'miniapp');
  for (let n = 1; n <= 5; n++) await mini.c.send('note', { n });
  await waitFor(() => h5.got.length === 5, 'five messages before the restart');
  const oldCursor = h5.c.lastSeq;

  const relay2 = await startRelay(t, testConfig());
  fwd.target(relay2.port);
  await relay1.stop(); // SIGKILL: both connections drop, the history is gone
  await reconnected(h5, 2, 'h5 to reach the new relay');
  await reconnected(mini, 2, 'miniapp to reach the new relay');
  assert.equal(h5.hellos[1].resumed, false);
  assert.equal(h5.resyncs.length, 1);
  assert.ok(h5.hellos[1].seq > oldCursor, `new counter ${h5.hellos[1].seq} starts above the old cursor ${oldCursor}`);
  for (let n = 6; n <= 8; n++) await mini.c.send('note', { n });
  await waitFor(() => h5.got.length === 8, 'the messages after the restart', 5000);
  assert.deepEqual(h5.got.map((m) => m.data.n), [1, 2, 3, 4, 5, 6, 7, 8]);
  assert.ok(h5.got[5].seq > oldCursor);
});
