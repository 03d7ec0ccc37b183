import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { WebSocketServer } from 'ws';
import { createWx } from './wx-shim.mjs';
import { createClient, wxSocketFactory } from '../dist/index.mjs';

/** A local ws server on 127.0.0.1, random port; records connections and their requests. */
async function startServer(t, onConnection = () => {}) {
  const srv = await listen(onConnection);
  t.after(srv.close);
  return srv;
}

async function listen(onConnection) {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await once(wss, 'listening');
  const conns = [];
  wss.on('connection', (ws, req) => {
    const c = { ws, req, url: new URL(req.url, 'http://x'), received: [] };
    ws.on('message', (data, isBinary) => c.received.push(isBinary ? data : data.toString()));
    conns.push(c);
    onConnection(c);
  });
  const close = () =>
    new Promise((r) => {
      for (const c of wss.clients) c.terminate();
      wss.close(r);
    });
  const nextConn = async () => {
    const n = conns.length;
    while (conns.length === n) await once(wss, 'connection');
    return conns[n];
  };
  return { wss, port: wss.address().port, conns, nextConn, close };
}

function until(fn, ms = 3000) {
  const deadline = Date.now() + ms;
  return new Promise((resolve, reject) => {
    const check = () => {
      let v;
      try {
        v = fn();
      } catch (e) {
        return reject(e);
      }
      if (v) return resolve(v);
      if (Date.now() > deadline) return reject(new Error('timed out waiting'));
      setTimeout(check, 5);
    };
    check();
  });
}

describe('wx shim: connectSocket', () => {
  test('SocketTask callbacks, text and binary messages, send, server close code', async (t) => {
    const srv = await startServer(t);
    const wx = createWx();
    t.after(() => wx.__shim.closeAll());
    const events = [];
    const connectResult = [];
    const task = wx.connectSocket({
      url: `ws://127.0.0.1:${srv.port}/socket?token=a&env=miniapp`,
      success: (r) => connectResult.push(r.errMsg),
    });
    task.onOpen((res) => events.push(['open', typeof res.header]));
    task.onMessage((res) => events.push(['message', res.data]));
    task.onClose((res) => events.push(['close', res.code, res.reason]));
    task.onError((res) => events.push(['error', res.errMsg]));
    const conn = await srv.nextConn();
    await until(() => events.length >= 1);
    assert.deepEqual(events[0], ['open', 'object']);
    assert.deepEqual(connectResult, ['connectSocket:ok']);
    assert.equal(conn.url.searchParams.get('env'), 'miniapp');
    assert.equal(conn.req.headers.origin, undefined, 'no Origin header, like a mini program');

    const sendResult = await new Promise((resolve) => task.send({ data: 'hello relay', success: resolve }));
    assert.equal(sendResult.errMsg, 'sendSocketMessage:ok');
    await until(() => conn.received.length === 1);
    assert.equal(conn.received[0], 'hello relay');

    conn.ws.send('{"type":"x"}');
    conn.ws.send(Buffer.from([1, 2, 3]));
    await until(() => events.length >= 3);
    assert.deepEqual(events[1], ['message', '{"type":"x"}']);
    assert.equal(events[2][0], 'message');
    assert.ok(events[2][1] instanceof ArrayBuffer, 'binary frames arrive as ArrayBuffer');
    assert.deepEqual([...new Uint8Array(events[2][1])], [1, 2, 3]);

    conn.ws.close(4502, 'replaced');
    await until(() => events.some((e) => e[0] === 'close'));
    assert.deepEqual(events.at(-1), ['close', 4502, 'replaced']);
    const late = await new Promise((resolve) => task.send({ data: 'late', fail: resolve }));
    assert.match(late.errMsg, /not connected/);
  });

  test('close() validates the code like WeChat and sends code and reason', async (t) => {
    const srv = await startServer(t);
    const wx = createWx();
    t.after(() => wx.__shim.closeAll());
    const task = wx.connectSocket({ url: `ws://127.0.0.1:${srv.port}/` });
    const early = await new Promise((resolve) => task.send({ data: 'too early', fail: resolve }));
    assert.match(early.errMsg, /not connected/);
    await new Promise((resolve) => task.onOpen(resolve));
    const conn = srv.conns[0] || (await srv.nextConn());
    const bad = await new Promise((resolve) => task.close({ code: 1006, fail: resolve }));
    assert.match(bad.errMsg, /1000, or between 3000 and 4999/);
    const closed = once(conn.ws, 'close');
    task.close({ code: 4000, reason: 'bye' });
    const [code, reason] = await closed;
    assert.equal(code, 4000);
    assert.equal(reason.toString(), 'bye');
  });

  test('invalid url and refused connections fail the way WeChat reports them', async (t) => {
    const wx = createWx();
    const fail = await new Promise((resolve) => wx.connectSocket({ url: 'http://example.invalid/', fail: resolve }));
    assert.match(fail.errMsg, /connectSocket:fail invalid url/);

    // a port that was just free: listen on 0, then close it
    const probe = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    await once(probe, 'listening');
    const port = probe.address().port;
    await new Promise((r) => probe.close(r));
    const seen = [];
    const task = wx.connectSocket({ url: `ws://127.0.0.1:${port}/` });
    task.onError((e) => seen.push(['error', typeof e.errMsg]));
    task.onClose((e) => seen.push(['close', e.code]));
    await until(() => seen.length === 2);
    assert.deepEqual(seen, [['error', 'string'], ['close', 1006]]);
  });

  test('maxSockets emulates the concurrent task limit when asked to', async (t) => {
    const srv = await startServer(t);
    const wx = createWx({ maxSockets: 2 });
    t.after(() => wx.__shim.closeAll());
    const url = `ws://127.0.0.1:${srv.port}/`;
    assert.ok(wx.connectSocket({ url }));
    assert.ok(wx.connectSocket({ url }));
    const err = await new Promise((resolve) => wx.connectSocket({ url, fail: resolve }));
    assert.match(err.errMsg, /exceed max task count/);
  });
});

describe('wx shim: cloud.connectContainer', () => {
  test('resolves {socketTask}; path and query reach the server with X-WX headers and no Origin', async (t) => {
    const srv = await startServer(t);
    const wx = createWx({ containerUrl: () => `ws://127.0.0.1:${srv.port}` });
    t.after(() => wx.__shim.closeAll());
    wx.cloud.init();
    const res = await wx.cloud.connectContainer({
      config: { env: 'prod-1abc' },
      service: 'relay',
      path: '/socket?v=1&token=t&env=miniapp',
    });
    assert.ok(res.socketTask && typeof res.socketTask.onMessage === 'function');
    const conn = await srv.nextConn();
    assert.equal(conn.url.pathname, '/socket');
    assert.equal(conn.url.searchParams.get('v'), '1');
    assert.equal(conn.req.headers['x-wx-env'], 'prod-1abc');
    assert.equal(conn.req.headers['x-wx-service'], 'relay');
    assert.equal(conn.req.headers.origin, undefined);
    const got = new Promise((resolve) => res.socketTask.onMessage(resolve));
    await new Promise((resolve) => res.socketTask.onOpen(resolve));
    conn.ws.send('hi');
    assert.deepEqual(await got, { data: 'hi' });
  });

  test('app show/hide listeners', () => {
    const wx = createWx();
    const seen = [];
    const cb = () => seen.push('show');
    wx.onAppShow(cb);
    wx.onAppHide(() => seen.push('hide'));
    wx.__shim.hide();
    wx.__shim.show();
    wx.offAppShow(cb);
    wx.__shim.show();
    assert.deepEqual(seen, ['hide', 'show']);
  });
});

/**
 * A few lines of relay behaviour, enough to drive the SDK over the shim: hello,
 * ack, pong, and forwarding between the connections of one token.
 */
function miniRelay(c, all) {
  const q = c.url.searchParams;
  c.env = q.get('env');
  c.token = q.get('token');
  let seq = 0;
  c.ws.send(JSON.stringify({ type: 'relay.hello', data: { session: 's', env: c.env, peers: [], seq, resumed: false } }));
  c.ws.on('message', (raw) => {
    const m = JSON.parse(raw.toString());
    if (m.type === 'relay.ping') return c.ws.send('{"type":"relay.pong","data":{}}');
    seq++;
    if (m.id) c.ws.send(JSON.stringify({ type: 'relay.ack', data: { id: m.id, seq } }));
    for (const o of all()) {
      if (o !== c && o.token === c.token && o.env !== c.env) {
        o.ws.send(JSON.stringify({ type: m.type, data: m.data, from: c.env, seq, id: m.id, ts: Date.now() }));
      }
    }
  });
}

describe('SDK over the wx shim', () => {
  let srv;
  let wx;
  before(async () => {
    srv = await listen((c) => miniRelay(c, () => srv.conns));
    wx = createWx({ containerUrl: () => `ws://127.0.0.1:${srv.port}` });
    globalThis.wx = wx;
  });
  after(async () => {
    delete globalThis.wx;
    wx.__shim.closeAll();
    await srv.close();
  });

  test('wx.connectSocket and connectContainer clients talk, ack and get replaced', async () => {
    const token = `shim-${process.pid}`;
    const mini = createClient({ url: `ws://127.0.0.1:${srv.port}/socket`, token, env: 'miniapp', socket: wxSocketFactory(wx) });
    const cloud = createClient({
      container: { env: 'prod-1abc', service: 'relay', path: '/socket' },
      token,
      env: 'h5',
      heartbeatInterval: 50,
    });
    const got = [];
    mini.on('addMaterial', (m) => got.push(m));
    await until(() => mini.state === 'open' && cloud.state === 'open');
    assert.equal(srv.conns.at(-1).url.searchParams.get('v'), '1');

    const ack = await cloud.send('addMaterial', { url: 'https://x/1.png' }, { to: ['miniapp'] });
    assert.equal(typeof ack.seq, 'number');
    await until(() => got.length === 1);
    assert.deepEqual(got[0].data, { url: 'https://x/1.png' });
    assert.equal(got[0].from, 'h5');

    // pings over the container socket are answered, so the 50 ms heartbeat keeps it open
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(cloud.state, 'open');

    // the lifecycle hooks come from the global wx
    wx.__shim.hide();
    wx.__shim.show();
    assert.equal(cloud.state, 'open');

    const states = [];
    mini.onState((s, d) => states.push([s, d.code]));
    const miniConn = srv.conns.find((c) => c.env === 'miniapp');
    miniConn.ws.close(4502, 'replaced');
    await until(() => mini.state === 'replaced');
    assert.deepEqual(states, [['replaced', 4502]]);
    cloud.close();
    assert.equal(cloud.state, 'closed');
  });
});
