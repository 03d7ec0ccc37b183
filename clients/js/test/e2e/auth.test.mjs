// The SDK against a relay with `auth: jwt`: short-lived HS256 JWTs, minted by
// the test, expire mid-session and are refreshed by the SDK (relay.error
// token_expired → the token function → relay.refresh) while both sides keep
// streaming: nothing lost, nothing twice, no reconnect. One side is the SDK in
// Chromium (the credential as a relay.auth.<base64url> subprotocol), the other
// the SDK in Node over the wx shim (the credential as an Authorization header,
// as a mini program sends it).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { createClient, wxSocketFactory } from '../../dist/index.mjs';
import { createWx } from '../wx-shim.mjs';
import { freshToken, launchChromium, startRelay, startSite, testConfig, waitFor } from './harness.mjs';

const SECRET = 'e2e-only-secret-0123456789abcdef-0123456789';
// With 8 s of life, the relay warns 4 s before exp (half the time left), so a refresh comes every ~4 s.
const LIFETIME_S = 8;

const b64u = (v) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

/** An HS256 JWT for pairing key `sub`, limited to `env`, expiring in `lifetime` seconds. */
function mint(sub, env, lifetime = LIFETIME_S) {
  const now = Math.floor(Date.now() / 1000);
  const head = b64u({ alg: 'HS256', typ: 'JWT' });
  const body = b64u({ sub, envs: [env], iat: now, exp: now + lifetime });
  const sig = createHmac('sha256', SECRET).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}

/** Records the WebSockets the page opens (url and subprotocols) without changing them. */
function recordWebSockets() {
  const Native = window.WebSocket;
  window.__ws = [];
  window.WebSocket = class extends Native {
    constructor(url, protocols) {
      super(url, protocols);
      window.__ws.push({ url: String(url), protocols: protocols || [] });
    }
  };
}

test('JWTs that expire mid-stream are refreshed by the SDK: no lost or repeated message, no reconnect, no 4501', { timeout: 120000 }, async (t) => {
  const relay = await startRelay(
    t,
    testConfig({
      auth: { provider: 'jwt', jwt: { algorithms: ['HS256'], secret: SECRET, key_claim: 'sub', envs_claim: 'envs' } },
    }),
  );
  const site = await startSite(t);
  const context = await launchChromium(t);
  await context.addInitScript(recordWebSockets);
  const pair = freshToken('auth');
  const minted = { h5: [], miniapp: [] };
  const tokenFor = (env) => {
    const jwt = mint(pair, env);
    minted[env].push(jwt);
    return jwt;
  };

  // ---- the H5 side in Chromium: its token function asks the test for a JWT
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  await page.exposeFunction('mintJwt', async (env) => tokenFor(env));
  await page.goto(`${site.url}/dist/index.mjs`); // any page of the site's origin, to import the SDK from
  await page.evaluate(async (url) => {
    const { createClient } = await import('/dist/index.mjs');
    window.__got = [];
    window.__states = [];
    window.__errors = [];
    window.__refreshErrors = [];
    window.relay = createClient({ url, token: () => window.mintJwt('h5'), env: 'h5' });
    window.relay.onAny((m) => window.__got.push({ n: m.data.n, seq: m.seq }));
    window.relay.onState((s, d) => window.__states.push([s, d.code === undefined ? null : d.code]));
    window.relay.onError((e) => window.__errors.push(e.code));
  }, relay.url);

  // ---- the miniapp side in Node: the SDK over the wx shim, JWT in a header
  const wx = createWx();
  t.after(() => wx.__shim.closeAll());
  const mini = createClient({
    url: relay.url,
    token: async () => tokenFor('miniapp'),
    credential: 'header',
    env: 'miniapp',
    socket: wxSocketFactory(wx),
    lifecycle: false,
  });
  t.after(() => mini.close());
  const miniGot = [];
  const miniStates = [];
  const miniErrors = [];
  mini.onAny((m) => miniGot.push({ n: m.data.n, seq: m.seq }));
  mini.onState((s, d) => miniStates.push([s, d.code === undefined ? null : d.code]));
  mini.onError((e) => miniErrors.push(e.code));

  await waitFor(() => mini.state === 'open', 'miniapp to connect', 10000);
  await page.waitForFunction(() => window.relay.state === 'open', null, { timeout: 10000 });
  await waitFor(() => mini.peers.includes('h5'), 'miniapp to see h5', 10000);

  // The first JWTs' exp: the sessions must outlive it by a margin (plus one more refresh each).
  const firstExp = Math.max(
    ...[minted.h5[0], minted.miniapp[0]].map((j) => JSON.parse(Buffer.from(j.split('.')[1], 'base64url')).exp),
  );

  // ---- both stream until each side has refreshed at least twice and the first JWTs are 2 s past exp
  let miniSent = 0;
  const miniSends = [];
  const miniTimer = setInterval(() => miniSends.push(mini.send('tick', { n: ++miniSent })), 50);
  t.after(() => clearInterval(miniTimer));
  await page.evaluate(() => {
    window.__sent = 0;
    window.__sendErrors = [];
    window.__timer = setInterval(() => {
      window.relay.send('tock', { n: ++window.__sent }).catch((e) => window.__sendErrors.push(e.code));
    }, 50);
  });
  await waitFor(
    () => minted.h5.length >= 3 && minted.miniapp.length >= 3 && Date.now() > firstExp * 1000 + 2000,
    'two refreshes on each side, past the first JWTs\' exp',
    60000,
    50,
  );
  clearInterval(miniTimer);
  await page.evaluate(() => clearInterval(window.__timer));
  const pageSent = await page.evaluate(() => window.__sent);

  // ---- every message arrived exactly once, in order, both ways
  await Promise.all(miniSends);
  await page.waitForFunction((n) => window.__got.length >= n, miniSent, { timeout: 10000 });
  await page.waitForFunction(() => window.relay.queued === 0, null, { timeout: 10000 });
  await waitFor(() => miniGot.length >= pageSent, 'miniapp to get every tock', 10000);
  const pageGot = await page.evaluate(() => window.__got);
  const inOrderOnce = (list, n, what) => {
    assert.deepEqual(list.map((m) => m.n), Array.from({ length: n }, (_, i) => i + 1), `${what}: every message once, in order`);
    for (let i = 1; i < list.length; i++) assert.ok(list[i].seq > list[i - 1].seq, `${what}: seq increases`);
  };
  inOrderOnce(pageGot, miniSent, 'miniapp → h5');
  inOrderOnce(miniGot, pageSent, 'h5 → miniapp');
  assert.ok(miniSent > 50 && pageSent > 50, `both streamed (${miniSent}, ${pageSent})`);

  // ---- one connection each for the whole run: the refreshes kept the sessions
  assert.deepEqual(miniStates, [['open', null]], 'miniapp never dropped');
  assert.deepEqual(await page.evaluate(() => window.__states), [['open', null]], 'h5 never dropped');
  assert.deepEqual(await page.evaluate(() => window.__sendErrors), []);
  assert.deepEqual(await page.evaluate(() => window.__errors), []);
  assert.deepEqual(miniErrors, []);
  assert.deepEqual(errors, []);
  assert.equal(await relay.metric('relay_closes_total{code="4501"}'), 0);
  assert.equal(await relay.metric('relay_drops_total{reason="token_expired"}'), 0);

  // ---- the browser offered the first JWT as a subprotocol, never in its URL
  const sockets = await page.evaluate(() => window.__ws);
  assert.equal(sockets.length, 1);
  assert.doesNotMatch(sockets[0].url, /token=/);
  assert.deepEqual(sockets[0].protocols, ['relay.v1', 'relay.auth.' + b64u(minted.h5[0])]);

  // ---- and no credential is in the relay's log
  const logText = relay.logs.map((l) => JSON.stringify(l)).join('\n');
  for (const jwt of [...minted.h5, ...minted.miniapp]) {
    assert.equal(logText.includes(jwt.split('.')[2]), false, 'a JWT signature in the relay log');
  }
});
