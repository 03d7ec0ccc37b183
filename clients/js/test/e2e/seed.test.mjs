// Mixed pairs: an original (seed wire) mini program — a raw `ws` client that
// connects without v=1 and decodes with JSON.parse(JSON.parse(data)) — paired
// with an SDK client. The config mirrors the shipped relay.yaml's envs (h5 and
// miniapp, seed wire for plain connections) without its routes, so any data
// goes through unchanged.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import WebSocket from 'ws';
import { createClient, wxSocketFactory } from '../../dist/index.mjs';
import { createWx } from '../wx-shim.mjs';
import { freshToken, shippedConfig, startRelay, testConfig, waitFor, withTimeout } from './harness.mjs';

/** The original mini program's socket code, reduced to what matters. */
async function originalMiniProgram(t, relay, token) {
  const ws = new WebSocket(`${relay.url}?token=${encodeURIComponent(token)}&env=miniapp`);
  t.after(() => ws.terminate());
  const raw = [];
  const decoded = [];
  ws.on('message', (data, isBinary) => {
    assert.equal(isBinary, false);
    raw.push(data.toString());
    decoded.push(JSON.parse(JSON.parse(data.toString()))); // exactly what the original client did
  });
  await withTimeout(once(ws, 'open'), 5000, 'seed client to open');
  return { ws, raw, decoded, send: (obj) => ws.send(typeof obj === 'string' ? obj : JSON.stringify(obj)) };
}

test('seed compatibility: an original client (no v=1, double JSON.parse) and the SDK talk both ways, and the SDK resumes what the seed client sent', { timeout: 60000 }, async (t) => {
  const relay = await startRelay(t, testConfig());
  const token = freshToken('seed');
  const wx = createWx();
  t.after(() => wx.__shim.closeAll());
  // random 0.5 and base 1000: a reconnect waits 500 ms, so what the seed client sends meanwhile is replayed
  const sdk = createClient({ url: relay.url, token, env: 'h5', socket: wxSocketFactory(wx), lifecycle: false, backoffBase: 1000, random: () => 0.5 });
  t.after(() => sdk.close());
  const got = [];
  const presence = [];
  sdk.onAny((m) => got.push(m));
  sdk.on('relay.presence', (m) => presence.push(m.data));
  await waitFor(() => sdk.state === 'open', 'SDK to connect');
  const helloSeq = sdk.lastSeq;

  const mini = await originalMiniProgram(t, relay, token);
  await waitFor(() => presence.some((p) => p.env === 'miniapp' && p.online), 'presence of the seed client');
  assert.deepEqual(sdk.peers, ['miniapp']);

  // SDK → original client: one JSON string literal per message, {type, data} inside
  const data = { name: 'a<b&c', list: [1, 2.5, null], nested: { s: 'line\nbreak "q" é 😀' } };
  const ack = await sdk.send('addMaterial', data, { to: ['miniapp'] });
  assert.ok(ack.seq > helloSeq);
  await sdk.send('noData');
  await waitFor(() => mini.decoded.length === 2, 'the seed client to get two frames');
  assert.equal(typeof JSON.parse(mini.raw[0]), 'string', 'a seed frame is a JSON string literal');
  assert.deepEqual(mini.decoded[0], { type: 'addMaterial', data });
  assert.deepEqual(Object.keys(mini.decoded[0]), ['type', 'data'], 'no id, seq, from or ts on the seed wire');
  assert.deepEqual(mini.decoded[1], { type: 'noData' });

  // original client → SDK: its {"type","data"} text arrives as a typed message; other text as type ''
  mini.send({ type: 'init', data: { x: 1, s: 'ü' } });
  mini.send('hello mini');
  mini.send({ data: 1 });
  await waitFor(() => got.length === 3, 'the SDK to get three messages');
  assert.deepEqual(
    got.map(({ type, data: d, from }) => ({ type, data: d, from })),
    [
      { type: 'init', data: { x: 1, s: 'ü' }, from: 'miniapp' },
      { type: '', data: 'hello mini', from: 'miniapp' },
      { type: '', data: '{"data":1}', from: 'miniapp' },
    ],
  );
  assert.ok(got[0].seq > ack.seq && got[1].seq > got[0].seq && got[2].seq > got[1].seq);
  assert.equal(got[0].id, undefined, 'seed messages carry no id');
  const typed = [];
  sdk.on('init', (m) => typed.push(m.data));
  mini.send({ type: 'init', data: 2 });
  await waitFor(() => typed.length === 1, 'on("init")');
  assert.deepEqual(typed, [2]);

  // the seed client's messages enter the history: a dropped SDK client resumes them
  const before = got.length;
  const resumed = await relay.metric('relay_resumes_total{resumed="true"}');
  wx.__shim.closeAll();
  await waitFor(() => sdk.state === 'reconnecting', 'SDK to notice the drop');
  for (let n = 1; n <= 5; n++) mini.send({ type: 'offline', data: { n } });
  await waitFor(() => sdk.state === 'open', 'SDK to reconnect', 10000);
  await waitFor(() => got.length === before + 5, 'the SDK to get what the seed client sent meanwhile', 5000);
  assert.deepEqual(
    got.slice(before).map((m) => m.data.n),
    [1, 2, 3, 4, 5],
  );
  assert.equal(await relay.metric('relay_resumes_total{resumed="true"}'), resumed + 1);
  // and the seed client still gets the SDK's messages after the reconnect
  await sdk.send('after', 'reconnect');
  await waitFor(() => mini.decoded.length === 3, 'the seed client to get the message after the reconnect');
  assert.deepEqual(mini.decoded[2], { type: 'after', data: 'reconnect' });
});

test('the original app\'s flow on the shipped relay.yaml: SDK h5 sends addMaterial through its route to the original mini program; a refused one rejects the send', { timeout: 60000 }, async (t) => {
  const relay = await startRelay(t, shippedConfig());
  const token = freshToken('route');
  const wx = createWx();
  t.after(() => wx.__shim.closeAll());
  const sdk = createClient({ url: relay.url, token, env: 'h5', socket: wxSocketFactory(wx), lifecycle: false });
  t.after(() => sdk.close());
  await waitFor(() => sdk.state === 'open', 'SDK to connect');
  const mini = await originalMiniProgram(t, relay, token);
  await waitFor(() => sdk.peers.includes('miniapp'), 'the seed peer');

  const before = Date.now();
  const { seq } = await sdk.send('addMaterial', { id: 7, name: 'a<b&c' }, { to: ['miniapp'] });
  assert.ok(seq > 0);
  await waitFor(() => mini.decoded.length === 1, 'the original client to get the material');
  const { type, data } = mini.decoded[0];
  assert.equal(type, 'addMaterial');
  assert.equal(data.id, 7);
  assert.equal(data.name, 'a<b&c');
  // the shipped route stamps it (transform: data.receivedAt: now())
  assert.ok(typeof data.receivedAt === 'number' && data.receivedAt >= before - 1000, `receivedAt ${data.receivedAt}`);

  // the route's validate handler refuses a material without a name: the send rejects, nothing is relayed
  const err = await sdk.send('addMaterial', { id: 8 }).then(
    () => assert.fail('an invalid material was accepted'),
    (e) => e,
  );
  assert.equal(err.name, 'RelayError');
  assert.equal(err.code, 'invalid_message');
  assert.equal(err.route, 'addMaterial');
  assert.match(err.ref, /^\w+$/);
  assert.ok(relay.logs.some((l) => l.ref === err.ref), 'the ref is in the relay log');
  assert.equal(sdk.queued, 0);
  await sdk.send('note', 'after the refusal');
  await waitFor(() => mini.decoded.length === 2, 'the next message');
  assert.deepEqual(mini.decoded[1], { type: 'note', data: 'after the refusal' });
});
