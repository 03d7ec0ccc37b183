// H5 in Chromium (the examples/h5 page, loading dist/index.mjs) ⇄ miniapp in
// Node (the SDK over the wx shim), through the real relay running the shipped
// relay.yaml. The page reaches the relay through a TCP forwarder so that the
// test can break its connection without touching the relay process:
// Chromium's offline emulation (context.setOffline) does not close open
// WebSockets, so it cannot produce a drop (checked in the last test).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createClient, wxSocketFactory } from '../../dist/index.mjs';
import { createWx } from '../wx-shim.mjs';
import {
  freshToken,
  launchChromium,
  shippedConfig,
  sleep,
  startForwarder,
  startRelay,
  startSite,
  waitFor,
  withTimeout,
} from './harness.mjs';

/** Counts the WebSockets a page creates (and their URLs) without changing them. */
function countWebSockets() {
  const Native = window.WebSocket;
  window.__ws = [];
  window.WebSocket = class extends Native {
    constructor(url, protocols) {
      super(url, protocols);
      window.__ws.push(String(url));
    }
  };
}

/** Records what the page's client sees, for the test to read. */
function record() {
  window.__got = [];
  window.__states = [];
  window.__resyncs = 0;
  window.relay.onAny((m) => window.__got.push({ type: m.type, data: m.data, seq: m.seq, from: m.from, id: m.id }));
  window.relay.onState((s, d) => window.__states.push([s, d.code]));
  window.relay.onResync(() => window.__resyncs++);
}

async function openExample(context, site, params, errors) {
  const page = await context.newPage();
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/WebSocket connection to .* failed/.test(m.text())) errors.push(`console: ${m.text()}`);
  });
  await page.goto(`${site.url}/examples/h5/index.html?${new URLSearchParams(params)}`, { timeout: 15000 });
  await page.waitForFunction(() => window.relay && window.relay.state === 'open', null, { timeout: 10000 });
  assert.equal(await page.textContent('#state'), 'open');
  await page.evaluate(record);
  return page;
}

const check = (list, what) => {
  // exactly 1..n, in order, each once
  const ns = list.map((m) => m.data.n);
  assert.deepEqual(ns, Array.from({ length: ns.length }, (_, i) => i + 1), `${what}: every message once, in order`);
  for (let i = 1; i < list.length; i++) assert.ok(list[i].seq > list[i - 1].seq, `${what}: seq increases`);
};

test('H5 page in Chromium ⇄ miniapp in Node: both ways, a drop without loss or duplicates, then replaced by a second tab', { timeout: 120000 }, async (t) => {
  const relay = await startRelay(t, shippedConfig());
  const fwd = await startForwarder(t, relay.port);
  const site = await startSite(t);
  const context = await launchChromium(t);
  await context.addInitScript(countWebSockets);
  const token = freshToken('browser');
  const params = { url: `ws://127.0.0.1:${fwd.port}/socket`, token, env: 'h5' };
  const errors = [];

  const page1 = await openExample(context, site, params, errors);

  const wx = createWx();
  t.after(() => wx.__shim.closeAll());
  const mini = createClient({ url: relay.url, token, env: 'miniapp', socket: wxSocketFactory(wx), lifecycle: false });
  t.after(() => mini.close());
  const miniGot = [];
  const miniPresence = [];
  mini.onAny((m) => miniGot.push(m));
  mini.on('relay.presence', (m) => miniPresence.push(m.data));
  await waitFor(() => mini.state === 'open', 'miniapp to connect');
  assert.deepEqual(mini.peers, ['h5']);
  await page1.waitForFunction(() => window.relay.peers.includes('miniapp'));
  await page1.waitForFunction(() => document.querySelector('#peers').textContent === 'miniapp');

  // seq is clock based, not 0/1: relay.hello.seq is the live-only session's cursor
  const helloSeq = await page1.evaluate(() => window.relay.lastSeq);
  assert.ok(Number.isSafeInteger(helloSeq) && helloSeq > 1e12, `hello seq ${helloSeq} is a large integer`);

  // ---- 1. both ways, through the page's own form
  await page1.fill('#text', '{"hello":"from h5"}');
  await page1.fill('#to', 'miniapp');
  await page1.click('#send button');
  await waitFor(() => miniGot.find((m) => m.type === 'note'), 'miniapp to get the form message');
  assert.deepEqual(miniGot[0].data, { hello: 'from h5' });
  assert.equal(miniGot[0].from, 'h5');
  assert.ok(miniGot[0].seq > helloSeq);
  await page1.waitForFunction(() => /acknowledged #\d+/.test(document.querySelector('#log').textContent));

  const ack = await mini.send('note', { hello: 'from miniapp' });
  assert.ok(ack.seq > miniGot[0].seq);
  await page1.waitForFunction(() => window.__got.some((m) => m.type === 'note' && m.data.hello === 'from miniapp'));
  assert.match(await page1.textContent('#log'), /miniapp → note: \{"hello":"from miniapp"\}/);

  // ---- 2. a drop while both sides keep sending
  let miniSent = 0;
  const miniSends = [];
  const miniTimer = setInterval(() => {
    miniSends.push(mini.send('tick', { n: ++miniSent }, { to: ['h5'] }));
  }, 20);
  t.after(() => clearInterval(miniTimer));
  await page1.evaluate(() => {
    window.__sent = 0;
    window.__sendErrors = [];
    window.__timer = setInterval(() => {
      window.relay.send('tock', { n: ++window.__sent }, { to: 'miniapp' }).catch((e) => window.__sendErrors.push(e.code));
    }, 20);
  });
  await page1.waitForFunction(() => window.__got.filter((m) => m.type === 'tick').length >= 10);
  await waitFor(() => miniGot.filter((m) => m.type === 'tock').length >= 10, 'miniapp to get 10 tocks');

  const resumesBefore = await relay.metric('relay_resumes_total{resumed="true"}');
  fwd.refuse(true); // the network stays down for a while: retries fail too
  assert.equal(fwd.cut(), 1, 'exactly the page connection was forwarded');
  await page1.waitForFunction(() => window.relay.state === 'reconnecting');
  // the relay itself noticed the connection end: the miniapp hears h5 go offline
  await waitFor(() => miniPresence.some((p) => p.env === 'h5' && p.online === false), 'relay to report h5 offline', 10000);
  const sentWhileDown = miniSent;
  await sleep(700);
  assert.ok(miniSent - sentWhileDown >= 10, 'the miniapp kept sending while h5 was away');
  assert.equal(await page1.evaluate(() => window.relay.state), 'reconnecting');
  assert.ok((await page1.evaluate(() => window.relay.queued)) >= 10, 'the page queued its sends while offline');
  fwd.refuse(false);
  await page1.waitForFunction(() => window.relay.state === 'open', null, { timeout: 20000 });
  await sleep(300);
  clearInterval(miniTimer);
  await page1.evaluate(() => clearInterval(window.__timer));
  const pageSent = await page1.evaluate(() => window.__sent);

  await page1.waitForFunction((n) => window.__got.filter((m) => m.type === 'tick').length >= n, miniSent, { timeout: 15000 });
  await waitFor(() => miniGot.filter((m) => m.type === 'tock').length >= pageSent, 'miniapp to get every tock', 15000);
  await sleep(200); // would let duplicates arrive
  const ticks = await page1.evaluate(() => window.__got.filter((m) => m.type === 'tick'));
  check(ticks, 'miniapp → h5');
  assert.equal(ticks.length, miniSent);
  check(miniGot.filter((m) => m.type === 'tock'), 'h5 → miniapp');
  assert.equal(miniGot.filter((m) => m.type === 'tock').length, pageSent);
  assert.deepEqual(await page1.evaluate(() => window.__sendErrors), []);
  await withTimeout(Promise.all(miniSends), 10000, 'every miniapp send to be acknowledged');
  assert.equal(await page1.evaluate(() => window.relay.queued), 0);

  const urls = await page1.evaluate(() => window.__ws);
  assert.ok(urls.length >= 2, 'the page reconnected');
  assert.doesNotMatch(urls[0], /since=/, 'first connection is live-only');
  assert.match(urls.at(-1), /[?&]v=1&/);
  assert.match(urls.at(-1), /[?&]since=\d+/, 'the reconnect resumes');
  assert.equal(await page1.evaluate(() => window.__resyncs), 0);
  assert.equal(await relay.metric('relay_resumes_total{resumed="true"}'), resumesBefore + 1);

  // ---- 3. the same token+env in a second tab replaces the first
  const wsBefore = urls.length;
  const presenceBefore = miniPresence.length;
  const page2 = await openExample(context, site, params, errors);
  await page1.waitForFunction(() => window.relay.state === 'replaced');
  assert.equal(await page1.textContent('#state'), 'replaced');
  assert.match(await page1.textContent('#detail'), /another tab/);
  assert.equal(await page1.isVisible('#takeover'), true);
  assert.deepEqual(await page1.evaluate(() => window.__states.at(-1)), ['replaced', 4502]);
  await sleep(2000); // longer than any backoff the page could be waiting out
  assert.equal(await page1.evaluate(() => window.__ws.length), wsBefore, 'the replaced page did not reconnect');
  assert.equal(await page1.evaluate(() => window.relay.state), 'replaced');
  assert.equal(await page2.evaluate(() => window.relay.state), 'open');
  assert.equal(await page2.evaluate(() => window.__ws.length), 1);
  assert.deepEqual(miniPresence.slice(presenceBefore), [], 'a replacement is no presence change');
  assert.ok(relay.logs.some((l) => l.message === 'session replaced'));

  await mini.send('note', { to: 'the new tab' });
  await page2.waitForFunction(() => window.__got.some((m) => m.data && m.data.to === 'the new tab'));
  assert.equal(await page1.evaluate(() => window.__got.some((m) => m.data && m.data.to === 'the new tab')), false);
  assert.deepEqual(errors, []);
});

test('Chromium offline emulation does not close an open WebSocket (why the drop above uses a forwarder)', { timeout: 60000 }, async (t) => {
  const relay = await startRelay(t, shippedConfig());
  const site = await startSite(t);
  const context = await launchChromium(t);
  const errors = [];
  const page = await openExample(context, site, { url: relay.url, token: freshToken('offline'), env: 'h5' }, errors);
  await context.setOffline(true);
  await sleep(1500);
  const state = await page.evaluate(() => window.relay.state);
  await context.setOffline(false);
  assert.equal(state, 'open', 'setOffline left the socket open: if this fails, Chromium changed and setOffline can drop sockets now');
  assert.deepEqual(errors, []);
});
