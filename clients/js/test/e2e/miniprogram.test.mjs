// Mini program side: the SDK in Node over test/wx-shim.mjs (wx.connectSocket and
// wx.cloud.connectContainer backed by real `ws` sockets) against the real relay.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import WebSocket from 'ws';
import { createClient, webSocketFactory } from '../../dist/index.mjs';
import { createWx } from '../wx-shim.mjs';
import { loadMiniProgram } from './miniprogram-runner.mjs';
import { JS_ROOT, freshToken, shippedConfig, sleep, startForwarder, startRelay, testConfig, waitFor, withTimeout } from './harness.mjs';

const EXAMPLE = join(JS_ROOT, 'examples/miniprogram');

/** A wx shim whose connectContainer reaches `port` on 127.0.0.1; records the container calls. */
function cloudWx(t, port) {
  const calls = [];
  const wx = createWx({
    containerUrl: (env, service) => {
      calls.push({ env, service });
      return `ws://127.0.0.1:${port}`;
    },
  });
  const toasts = [];
  wx.showToast = (o) => toasts.push(o); // the example shows a toast when a send fails
  const connectContainer = wx.cloud.connectContainer;
  wx.cloud.connectContainer = (o) => {
    calls.push({ path: o.path, config: o.config, service: o.service });
    return connectContainer(o);
  };
  t.after(() => wx.__shim.closeAll());
  return { wx, calls, toasts };
}

/** A plain Node peer: the SDK over npm `ws`. */
function nodePeer(t, url, token, env) {
  const c = createClient({ url, token, env, socket: webSocketFactory(WebSocket), lifecycle: false });
  t.after(() => c.close());
  const got = [];
  c.onAny((m) => got.push(m));
  return { c, got };
}

/** Unloads the page and closes its client (timers would keep the test process alive). */
function closeMiniProgram(mp) {
  mp.unload();
  if (mp.page.relay) mp.page.relay.close();
}

const ns = (list) => list.map((m) => m.data.n);
const oneToN = (n) => Array.from({ length: n }, (_, i) => i + 1);

test('the mini program example (app.js + pages/index) over connectContainer: both ways, a dropped socket, replaced by another device', { timeout: 60000 }, async (t) => {
  const relay = await startRelay(t, shippedConfig());
  const fwd = await startForwarder(t, relay.port);
  const token = freshToken('mp');
  const dev1 = cloudWx(t, fwd.port);
  const mp = loadMiniProgram(EXAMPLE, { wx: dev1.wx, launch: { query: { token }, scene: 1011 } });
  t.after(() => closeMiniProgram(mp));
  const { page } = mp;
  await waitFor(() => page.data.state === 'open', 'the example page to connect');
  assert.equal(page.data.token, token);
  const first = dev1.calls.find((c) => c.path);
  assert.equal(first.service, 'relay');
  assert.match(first.path, new RegExp(`^/socket\\?v=1&token=${token}&env=miniapp$`));

  const h5 = nodePeer(t, relay.url, token, 'h5');
  await waitFor(() => h5.c.state === 'open', 'h5 peer to connect');
  await waitFor(() => page.data.peers === 'h5', 'the page to show h5 as a peer');

  // both ways, through the page's handlers
  page.onInput({ detail: { value: '  hello from the mini program ' } });
  page.onSend();
  await waitFor(() => h5.got.find((m) => m.type === 'note'), 'h5 to get the note');
  assert.equal(h5.got[0].data, 'hello from the mini program');
  assert.equal(h5.got[0].from, 'miniapp');
  await waitFor(() => page.data.messages.some((e) => /^acknowledged #\d+$/.test(e.text)), 'the ack on the page');
  await h5.c.send('note', { x: 1 });
  await waitFor(() => page.data.messages.some((e) => e.kind === 'in' && /h5 → note: \{"x":1\}$/.test(e.text)), 'the page to show the message');

  // a drop while both sides keep sending; the network stays down for a moment
  const relayClient = mp.app.relay(); // the page's shared client
  assert.equal(relayClient, page.relay);
  const miniGot = [];
  relayClient.onAny((m) => m.type === 'tick' && miniGot.push(m));
  let miniSent = 0;
  let h5Sent = 0;
  const sends = [];
  const timer = setInterval(() => {
    sends.push(relayClient.send('tock', { n: ++miniSent }));
    sends.push(h5.c.send('tick', { n: ++h5Sent }, { to: ['miniapp'] }));
  }, 20);
  t.after(() => clearInterval(timer));
  await waitFor(() => miniGot.length >= 10, '10 ticks before the drop');
  fwd.refuse(true);
  assert.equal(dev1.wx.__shim.open.size, 1);
  dev1.wx.__shim.closeAll(); // abrupt: the shim's underlying ws socket is terminated, no close frame
  await waitFor(() => page.data.state === 'reconnecting', 'the page to show reconnecting');
  await sleep(600);
  fwd.refuse(false);
  await waitFor(() => page.data.state === 'open', 'the page to reconnect', 15000);
  await sleep(300);
  clearInterval(timer);
  await withTimeout(Promise.all(sends), 10000, 'every send to be acknowledged');
  await waitFor(() => miniGot.length >= h5Sent, 'every tick', 10000);
  await waitFor(() => h5.got.filter((m) => m.type === 'tock').length >= miniSent, 'every tock', 10000);
  await sleep(200);
  assert.deepEqual(ns(miniGot), oneToN(h5Sent), 'h5 → miniapp: each once, in order');
  assert.deepEqual(ns(h5.got.filter((m) => m.type === 'tock')), oneToN(miniSent), 'h5 ← miniapp: each once, in order');
  const last = dev1.calls.filter((c) => c.path).at(-1);
  assert.match(last.path, /&since=\d+$/, 'the reconnect resumed');
  assert.ok(h5Sent > 30);

  // the same token on another device replaces this one, which does not come back by itself
  const dev2 = cloudWx(t, fwd.port);
  const mp2 = loadMiniProgram(EXAMPLE, { wx: dev2.wx, launch: { query: { token }, scene: 1011 } });
  t.after(() => closeMiniProgram(mp2));
  await waitFor(() => mp2.page.data.state === 'open', 'the second device to connect');
  await waitFor(() => page.data.state === 'replaced', 'the first device to show replaced');
  assert.equal(page.data.detail, 'opened on another device');
  const callsBefore = dev1.calls.length;
  await sleep(1500);
  assert.equal(page.data.state, 'replaced');
  assert.equal(dev1.calls.length, callsBefore, 'no reconnect after 4502');
  assert.equal(mp2.page.data.state, 'open');

  // "Use here" takes it back
  page.onTakeOver();
  await waitFor(() => page.data.state === 'open', 'the first device to take over');
  await waitFor(() => mp2.page.data.state === 'replaced', 'the second device to be replaced');
  assert.deepEqual([...dev1.toasts, ...dev2.toasts], []);
});

test('wx.connectSocket (global wx) with onAppHide/onAppShow: heartbeat pauses in the background, show reconnects at once', { timeout: 60000 }, async (t) => {
  const relay = await startRelay(t, testConfig());
  const token = freshToken('life');
  const wx = createWx();
  const frames = [];
  const connectSocket = wx.connectSocket;
  let sockets = 0;
  wx.connectSocket = (o) => {
    sockets++;
    const task = connectSocket(o);
    const send = task.send.bind(task);
    task.send = (s) => {
      frames.push({ at: Date.now(), type: JSON.parse(s.data).type });
      send(s);
    };
    return task;
  };
  globalThis.wx = wx;
  t.after(() => {
    delete globalThis.wx;
    wx.__shim.closeAll();
  });
  // no socket or lifecycle options: the SDK picks wx.connectSocket and wx.onAppShow/onAppHide
  const mini = createClient({
    url: relay.url,
    token,
    env: 'miniapp',
    heartbeatInterval: 100,
    backoffBase: 20000,
    backoffCap: 20000,
    random: () => 0.999, // every backoff wait is ~20 s
  });
  t.after(() => mini.close());
  const got = [];
  const states = [];
  mini.onAny((m) => got.push(m));
  mini.onState((s, d) => states.push({ s, ...d }));
  await waitFor(() => mini.state === 'open', 'miniapp to connect');
  const h5 = nodePeer(t, relay.url, token, 'h5');
  await waitFor(() => h5.c.state === 'open', 'h5 to connect');

  const pings = () => frames.filter((f) => f.type === 'relay.ping').length;
  await waitFor(() => pings() >= 2, 'heartbeat pings while in front', 3000);

  wx.__shim.hide();
  const hiddenAt = pings();
  await sleep(500);
  assert.equal(pings(), hiddenAt, 'no pings while in the background');

  // WeChat may kill the socket in the background; the SDK schedules a ~20 s retry
  wx.__shim.closeAll();
  await waitFor(() => mini.state === 'reconnecting', 'reconnecting');
  assert.ok(states.at(-1).delay > 10000, `backoff delay ${states.at(-1).delay}`);
  for (let n = 1; n <= 3; n++) await h5.c.send('note', { n }, { to: ['miniapp'] });

  const shownAt = Date.now();
  wx.__shim.show();
  await waitFor(() => mini.state === 'open', 'reconnect on show', 3000);
  assert.ok(Date.now() - shownAt < 2000, 'reconnected right away, not after the backoff');
  assert.equal(sockets, 2);
  await waitFor(() => got.length === 3, 'the messages sent while away');
  assert.deepEqual(ns(got), [1, 2, 3]);
  await waitFor(() => pings() > hiddenAt + 1, 'pings again after show', 3000);

  // show with the socket still open: an immediate ping probes it
  wx.__shim.hide();
  const before = pings();
  wx.__shim.show();
  assert.equal(pings(), before + 1, 'a probe ping right on show');
  await sleep(300);
  assert.equal(mini.state, 'open');
  assert.equal(sockets, 2);
});
