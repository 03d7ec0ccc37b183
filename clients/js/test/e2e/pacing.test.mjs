// Send pacing against the real relay on the shipped relay.yaml (100 messages/s,
// burst 200, every frame counted): a client that comes back with a backlog of
// 500 sends queued while offline paces itself to the limits announced in
// relay.hello instead of running into rate_limited (and close 4029).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { createClient, webSocketFactory } from '../../dist/index.mjs';
import { freshToken, shippedConfig, sleep, startForwarder, startRelay, waitFor } from './harness.mjs';

/** webSocketFactory(ws) that also records every relay.hello, relay.error and close the client gets. */
function recordingFactory() {
  const inner = webSocketFactory(WebSocket);
  const seen = { hellos: [], errors: [], closes: [] };
  const factory = (url, events, options) =>
    inner(
      url,
      {
        ...events,
        onMessage(text) {
          const f = JSON.parse(text);
          if (f.type === 'relay.hello') seen.hellos.push({ at: Date.now(), data: f.data });
          if (f.type === 'relay.error') seen.errors.push(f.data);
          events.onMessage(text);
        },
        onClose(code, reason) {
          seen.closes.push(code);
          events.onClose(code, reason);
        },
      },
      options,
    );
  return { factory, seen };
}

test('500 sends queued offline are delivered after the reconnect exactly once, in order, paced: no rate_limited, no 4029', { timeout: 60000 }, async (t) => {
  const relay = await startRelay(t, shippedConfig());
  const fwd = await startForwarder(t, relay.port);
  const token = freshToken('pacing');
  const N = 500;

  const mini = createClient({ url: relay.url, token, env: 'miniapp', socket: webSocketFactory(WebSocket), lifecycle: false });
  t.after(() => mini.close());
  const got = [];
  mini.onAny((m) => got.push(m));

  const rec = recordingFactory();
  const h5 = createClient({
    url: `ws://127.0.0.1:${fwd.port}/socket`,
    token,
    env: 'h5',
    socket: rec.factory,
    lifecycle: false,
    backoffBase: 200,
    backoffCap: 1000,
  });
  t.after(() => h5.close());
  const errors = [];
  h5.onError((e) => errors.push(e));
  await waitFor(() => h5.state === 'open' && mini.state === 'open' && h5.peers.includes('miniapp'), 'both clients online', 10000);
  assert.deepEqual(rec.seen.hellos[0].data.limits, { messagesPerSecond: 100, burst: 200, maxFrameBytes: 65536 }, 'the shipped limits, announced');

  // Offline: the network drops and stays down while the app keeps sending.
  fwd.refuse(true);
  fwd.cut();
  await waitFor(() => h5.state === 'reconnecting', 'h5 to notice the drop');
  const results = [];
  for (let n = 0; n < N; n++) {
    h5.send('note', { n }, { to: ['miniapp'] }).then(
      (r) => results.push({ n, seq: r.seq }),
      (e) => results.push({ n, error: e.code }),
    );
  }
  assert.equal(h5.queued, N);
  await sleep(300);
  assert.equal(got.length, 0, 'nothing got through while offline');

  // Back online: the whole backlog goes out on the next connection.
  const hellosBefore = rec.seen.hellos.length;
  fwd.refuse(false);
  await waitFor(() => results.length === N, `all ${N} sends to settle (${results.length} so far)`, 20000, 50);
  const done = Date.now();
  await waitFor(() => got.length >= N, `miniapp to get all ${N} (${got.length} so far)`, 5000);
  await sleep(300); // anything repeated would arrive now

  assert.deepEqual(results.filter((r) => r.error), [], 'no send rejected');
  assert.deepEqual(rec.seen.errors, [], 'the relay refused nothing (no rate_limited)');
  assert.equal(await relay.metric('relay_drops_total{reason="rate_limited"}'), 0);
  assert.ok(!rec.seen.closes.includes(4029), `closes: ${rec.seen.closes}`);
  assert.equal(rec.seen.hellos.length, hellosBefore + 1, 'one reconnect carried the whole backlog, no disconnect after it');
  assert.equal(h5.state, 'open');
  assert.equal(h5.queued, 0);
  assert.deepEqual(errors.filter((e) => e.code !== 'transport_error'), [], 'no error but the refused connection attempts');

  // Exactly once, in order: the relay accepted them in send order, and miniapp got each once.
  results.sort((a, b) => a.n - b.n);
  for (let i = 1; i < N; i++) assert.ok(results[i].seq > results[i - 1].seq, `seq of ${i} after seq of ${i - 1}`);
  assert.equal(got.length, N);
  assert.deepEqual(got.map((m) => m.data.n), Array.from({ length: N }, (_, i) => i));
  assert.deepEqual(got.map((m) => m.seq), results.map((r) => r.seq));

  // Paced, not lucky: 190 at once, then 90 per second → about 3.4 s for the other 310.
  const took = done - rec.seen.hellos[hellosBefore].at;
  assert.ok(took >= 2500, `the backlog took ${took} ms; at the relay's 100/s after a burst of 200 it cannot be much faster`);
  t.diagnostic(`backlog of ${N} delivered ${took} ms after relay.hello`);
});
