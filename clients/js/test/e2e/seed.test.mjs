// Mixed pairs: an original (seed wire) mini program — a raw `ws` client that
// connects without v=1 and decodes with JSON.parse(JSON.parse(data)) — paired
// with an SDK client, on a config that mirrors the shipped relay.yaml's envs
// (h5 and miniapp, seed wire for plain connections) and on the shipped
// relay.yaml itself.
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

test('the original app\'s flow on the shipped relay.yaml: addMaterial passes its route unchanged, SDK h5 to the original mini program and back', { timeout: 60000 }, async (t) => {
  const relay = await startRelay(t, shippedConfig());
  const token = freshToken('route');
  const wx = createWx();
  t.after(() => wx.__shim.closeAll());
  const sdk = createClient({ url: relay.url, token, env: 'h5', socket: wxSocketFactory(wx), lifecycle: false });
  t.after(() => sdk.close());
  const got = [];
  sdk.on('addMaterial', (m) => got.push(m));
  await waitFor(() => sdk.state === 'open', 'SDK to connect');
  const mini = await originalMiniProgram(t, relay, token);
  await waitFor(() => sdk.peers.includes('miniapp'), 'the seed peer');

  // the shipped route only logs: the original client gets exactly the SDK's {type, data}
  const data = { id: 7, url: 'https://cdn.example.com/m/7.png', name: 'a<b&c \u2028 é' };
  const { seq } = await sdk.send('addMaterial', data, { to: ['miniapp'] });
  assert.ok(seq > 0);
  await waitFor(() => mini.decoded.length === 1, 'the original client to get the material');
  assert.equal(mini.raw[0], JSON.stringify(JSON.stringify({ type: 'addMaterial', data })));
  // any data passes, as through the original relay
  await sdk.send('addMaterial', { url: 'no id, no name' });
  await waitFor(() => mini.decoded.length === 2, 'the second material');
  assert.deepEqual(mini.decoded[1], { type: 'addMaterial', data: { url: 'no id, no name' } });

  // and the other way: the original client's addMaterial reaches the SDK as it was sent
  mini.send({ type: 'addMaterial', data: { url: 'from the mini program' } });
  await waitFor(() => got.length === 1, 'the SDK to get the material');
  assert.deepEqual(got[0].data, { url: 'from the mini program' });
  assert.equal(got[0].from, 'miniapp');
});

test('a route that refuses a message rejects the SDK\'s send() with the route and the ref of the relay\'s log line', { timeout: 60000 }, async (t) => {
  const relay = await startRelay(
    t,
    testConfig({
      routes: [
        {
          name: 'addMaterial',
          match: { type: 'addMaterial' },
          handlers: [{ handler: 'validate', schema: { type: 'object', required: ['id', 'name'] } }],
        },
      ],
    }),
  );
  const token = freshToken('refuse');
  const wx = createWx();
  t.after(() => wx.__shim.closeAll());
  const sdk = createClient({ url: relay.url, token, env: 'h5', socket: wxSocketFactory(wx), lifecycle: false });
  t.after(() => sdk.close());
  await waitFor(() => sdk.state === 'open', 'SDK to connect');
  const mini = await originalMiniProgram(t, relay, token);
  await waitFor(() => sdk.peers.includes('miniapp'), 'the seed peer');

  // the route's validate handler refuses a material without a name: the send rejects, nothing is relayed
  const err = await sdk.send('addMaterial', { id: 8 }).then(
    () => assert.fail('an invalid material was accepted'),
    (e) => e,
  );
  assert.equal(err.name, 'RelayError');
  assert.equal(err.code, 'invalid_message', 'the relay\'s own code, not one of the SDK\'s local ones');
  assert.equal(err.route, 'addMaterial');
  assert.match(err.ref, /^\w+$/);
  assert.ok(relay.logs.some((l) => l.ref === err.ref), 'the ref is in the relay log');
  assert.equal(sdk.queued, 0);
  await sdk.send('addMaterial', { id: 9, name: 'valid' });
  await sdk.send('note', 'after the refusal');
  await waitFor(() => mini.decoded.length === 2, 'the next messages');
  assert.deepEqual(mini.decoded, [
    { type: 'addMaterial', data: { id: 9, name: 'valid' } },
    { type: 'note', data: 'after the refusal' },
  ]);
});
