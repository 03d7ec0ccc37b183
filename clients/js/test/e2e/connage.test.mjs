// limits.max_connection_age against the real relay: it closes each connection with 4012 at its
// age, and the SDK comes back at once (no backoff) with since=, so a stream crossing the closes
// loses nothing and repeats nothing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createClient, wxSocketFactory } from '../../dist/index.mjs';
import { createWx } from '../wx-shim.mjs';
import { freshToken, sleep, startRelay, testConfig, waitFor } from './harness.mjs';

function client(t, url, token, env) {
  const wx = createWx();
  // A backoff this long would outlast the test: every reconnect here must skip it.
  const c = createClient({
    url,
    token,
    env,
    socket: wxSocketFactory(wx),
    lifecycle: false,
    backoffBase: 60000,
    backoffCap: 60000,
  });
  const rec = { c, got: [], reconnects: [], resyncs: 0 };
  c.on('note', (m) => rec.got.push(m.data.n));
  c.onResync(() => rec.resyncs++);
  c.onState((state, d) => {
    if (state === 'reconnecting') rec.reconnects.push({ code: d.code, delay: d.delay });
  });
  t.after(() => {
    c.close();
    wx.__shim.closeAll();
  });
  return rec;
}

test('connections closed at their age (4012) reconnect at once and resume: a stream both ways loses nothing', { timeout: 60000 }, async (t) => {
  const relay = await startRelay(
    t,
    testConfig({ limits: { messages_per_second: 0, max_connection_age: '2s', max_connection_age_jitter: 0.25 } }),
  );
  const token = freshToken('age');
  const h5 = client(t, relay.url, token, 'h5');
  const mini = client(t, relay.url, token, 'miniapp');
  await waitFor(() => h5.c.state === 'open' && mini.c.state === 'open', 'both to connect', 10000);

  // About 5 s of traffic, past at least two ages of each connection.
  const total = 200;
  const acks = [];
  for (let n = 0; n < total; n++) {
    acks.push(h5.c.send('note', { n }), mini.c.send('note', { n }));
    await sleep(25);
  }
  await Promise.all(acks);
  await waitFor(() => h5.got.length >= total && mini.got.length >= total, 'every message on both sides', 20000);

  const expected = Array.from({ length: total }, (_, n) => n);
  for (const [name, rec] of [
    ['h5', h5],
    ['miniapp', mini],
  ]) {
    assert.deepEqual(rec.got, expected, `${name} got every message once, in order`);
    assert.equal(rec.resyncs, 0, `${name} resumed every time`);
    const aged = rec.reconnects.filter((r) => r.code === 4012);
    assert.ok(aged.length >= 2, `${name}: ${aged.length} closes at the connection age, want at least 2`);
    assert.deepEqual(
      aged.map((r) => r.delay),
      aged.map(() => 0),
      `${name} reconnected without backoff after 4012`,
    );
  }
  assert.ok((await relay.metric('relay_closes_total{code="4012"}')) >= 4);
});
