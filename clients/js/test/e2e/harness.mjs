// Shared pieces of the end-to-end tests: the real relay binary (built from the
// repo with `go build`), a TCP forwarder that can cut connections, a static
// site for the H5 example, Chromium through playwright-core, and bounded waits.
//
// Everything listens on 127.0.0.1 and talks only to 127.0.0.1. Everything a
// test starts is stopped in t.after(), also when the test fails; a missing Go
// toolchain or Chromium fails the test (nothing here ever skips).
import { spawn, execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createStaticServer } from '../../scripts/serve-examples.mjs';

/** clients/js */
export const JS_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
/** the Go module root (relay) */
export const REPO_ROOT = resolve(JS_ROOT, '../..');
export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

// ------------------------------------------------------------------ waiting

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls fn until it returns a truthy value (returned) or `timeout` ms pass (throws, naming `what`). */
export async function waitFor(fn, what, timeout = 5000, interval = 10) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await sleep(interval);
  }
}

/** Rejects when `promise` does not settle within `ms`. */
export function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** A token no other test (or earlier run) uses. */
export function freshToken(label = 'e2e') {
  return `${label}-${process.pid}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
}

// Cleanup that must happen even when the process dies on an uncaught error.
const atExit = new Set();
process.once('exit', () => {
  for (const fn of atExit) {
    try {
      fn();
    } catch {
      // best effort
    }
  }
});

/** A temp dir, removed by rm() or at process exit at the latest. */
function tempDir(prefix) {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  const rm = () => {
    atExit.delete(rm);
    rmSync(dir, { recursive: true, force: true });
  };
  atExit.add(rm);
  return { dir, rm };
}

// ------------------------------------------------------------------ relay

/**
 * `go build -o out ./cmd/relay` in the repo root. Offline unless the caller's
 * environment says otherwise (GOPROXY=off, GOTOOLCHAIN=local): the tests must
 * not reach the network, so missing modules fail the build instead.
 */
export function goBuildRelay(out) {
  return new Promise((resolveBuild, reject) => {
    const env = { ...process.env, GOPROXY: process.env.GOPROXY || 'off', GOTOOLCHAIN: process.env.GOTOOLCHAIN || 'local' };
    execFile(
      'go',
      ['build', '-o', out, './cmd/relay'],
      { cwd: REPO_ROOT, env, timeout: 300000, maxBuffer: 8 << 20 },
      (err, _stdout, stderr) => {
        if (err) {
          reject(
            new Error(
              `go build ./cmd/relay failed in ${REPO_ROOT} (the e2e tests need Go and a buildable relay; ` +
                `with GOPROXY=off, run \`go mod download\` first): ${err.message}\n${stderr}`,
            ),
          );
        } else resolveBuild(out);
      },
    );
  });
}

let built;
/**
 * The relay binary: $RELAY_BIN when set (scripts/run-e2e.mjs builds it once),
 * else built once per test process. A build failure fails every test that needs it.
 */
export function buildRelay() {
  if (!built) {
    if (process.env.RELAY_BIN) {
      built = existsSync(process.env.RELAY_BIN)
        ? Promise.resolve(process.env.RELAY_BIN)
        : Promise.reject(new Error(`RELAY_BIN=${process.env.RELAY_BIN} does not exist`));
    } else {
      const { dir } = tempDir('relay-e2e-bin-');
      built = goBuildRelay(join(dir, 'relay'));
    }
  }
  return built;
}

/**
 * The relay.yaml shipped at the repo root, with only `listen` changed to
 * 127.0.0.1:0, so the tests run against exactly what the examples are
 * documented against.
 */
export function shippedConfig() {
  const text = readFileSync(join(REPO_ROOT, 'relay.yaml'), 'utf8');
  const re = /^listen:.*$/m;
  if (!re.test(text)) throw new Error('relay.yaml has no top-level `listen:` line to point at 127.0.0.1:0');
  return text.replace(re, 'listen: "127.0.0.1:0"');
}

/**
 * A config of our own (JSON is valid YAML). The base mirrors the shipped file
 * (envs h5 and miniapp on the seed wire for plain connections) without the
 * rate limit; `overrides` are merged one level deep.
 */
export function testConfig(overrides = {}) {
  const base = {
    listen: '127.0.0.1:0',
    path: '/socket',
    wire: 'seed',
    envs: { h5: { wire: 'seed' }, miniapp: { wire: 'seed' } },
    on_duplicate: 'replace',
    limits: { messages_per_second: 0 },
    log: { level: 'info', format: 'json' },
  };
  const cfg = { ...base };
  for (const [k, v] of Object.entries(overrides)) {
    cfg[k] = v && typeof v === 'object' && !Array.isArray(v) && base[k] ? { ...base[k], ...v } : v;
  }
  return JSON.stringify(cfg, null, 2) + '\n';
}

/**
 * Starts `relay serve -c <tmp config>` and waits for its "relay listening"
 * line. The process is killed in t.after(). Returns {port, url, logs, …}.
 */
export async function startRelay(t, configText = testConfig()) {
  const bin = await buildRelay();
  const { dir, rm } = tempDir('relay-e2e-cfg-');
  const cfgPath = join(dir, 'relay.yaml');
  writeFileSync(cfgPath, configText);
  const env = { ...process.env };
  delete env.PORT; // PORT would replace the port of `listen`
  const child = spawn(bin, ['serve', '-c', cfgPath], { cwd: dir, env, stdio: ['ignore', 'ignore', 'pipe'] });
  const exited = new Promise((r) => child.once('exit', (code, signal) => r({ code, signal })));
  const logs = [];
  let stderr = '';
  let partial = '';
  let onLine = () => {};
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk) => {
    stderr += chunk;
    partial += chunk;
    let i;
    while ((i = partial.indexOf('\n')) >= 0) {
      const line = partial.slice(0, i);
      partial = partial.slice(i + 1);
      try {
        logs.push(JSON.parse(line));
      } catch {
        logs.push({ message: line });
      }
      onLine();
    }
  });
  const addrOrPending = () => (logs.find((l) => l.message === 'relay listening') || {}).addr || '(not listening)';
  const kill = () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  atExit.add(kill);
  const stop = async () => {
    // E2E_RELAY_LOGS=1 prints each relay's log when it is stopped
    if (process.env.E2E_RELAY_LOGS) process.stderr.write(`--- relay ${addrOrPending()} log:\n${stderr}`);
    kill();
    await withTimeout(exited, 5000, 'relay to exit after SIGKILL');
    atExit.delete(kill);
    rm();
  };
  t.after(stop);
  const addr = await withTimeout(
    new Promise((resolveAddr, reject) => {
      onLine = () => {
        const hit = logs.find((l) => l.message === 'relay listening');
        if (hit) resolveAddr(hit.addr);
      };
      onLine();
      exited.then(({ code, signal }) =>
        reject(new Error(`relay exited (${code ?? signal}) before listening:\n${stderr}`)),
      );
    }),
    15000,
    `relay to log "relay listening" (stderr so far: ${stderr})`,
  );
  const m = /^127\.0\.0\.1:(\d+)$/.exec(addr);
  if (!m) throw new Error(`relay listens on ${addr}, expected 127.0.0.1:PORT`);
  const port = Number(m[1]);
  return {
    port,
    addr,
    url: `ws://127.0.0.1:${port}/socket`,
    logs,
    child,
    stop,
    /** Fetches /metrics and returns the value of one sample line (0 when absent). */
    async metric(sample) {
      const text = await httpGet(`http://127.0.0.1:${port}/metrics`);
      for (const line of text.split('\n')) {
        if (line.startsWith(sample + ' ')) return Number(line.slice(sample.length + 1));
      }
      return 0;
    },
  };
}

function httpGet(url) {
  return withTimeout(
    new Promise((resolveGet, reject) => {
      http
        .get(url, (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (c) => (body += c));
          res.on('end', () => resolveGet(body));
        })
        .on('error', reject);
    }),
    5000,
    `GET ${url}`,
  );
}

// ------------------------------------------------------------------ TCP forwarder

/**
 * Closes a socket with a TCP RST. Node's resetAndDestroy() on a socket whose
 * writable side was already ended (shut down) fails inside libuv (EINVAL) and
 * leaves the handle open for good, which makes the process spin at exit; such
 * a socket is past sending data anyway, so it is just destroyed.
 */
function reset(socket) {
  if (socket.destroyed) return;
  if (socket.writableEnded || socket.connecting) socket.destroy();
  else socket.resetAndDestroy();
}

/**
 * A TCP forwarder on 127.0.0.1 in front of the relay: the way to break a live
 * connection without touching the relay process.
 * - cut(): resets both TCP connections of every forwarded pair (RST): the
 *   relay's read fails and it ends the session (its peers get
 *   relay.presence online:false), the client sees close 1006.
 * - refuse(true): new connections are reset right after accept (a network that
 *   is down), until refuse(false).
 * - target(port): where new connections go (to swap in a restarted relay).
 */
export async function startForwarder(t, targetPort) {
  const pairs = new Set();
  let refusing = false;
  let target = targetPort;
  let accepted = 0;
  const server = net.createServer((client) => {
    accepted++;
    if (refusing) {
      client.on('error', () => {});
      reset(client);
      return;
    }
    const upstream = net.connect(target, '127.0.0.1');
    const pair = { client, upstream };
    pairs.add(pair);
    const end = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    for (const s of [client, upstream]) {
      s.setNoDelay(true);
      s.on('error', end);
      s.on('close', end);
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((r, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', r);
  });
  const fwd = {
    port: server.address().port,
    get accepted() {
      return accepted;
    },
    get open() {
      return pairs.size;
    },
    cut() {
      const n = pairs.size;
      for (const { client, upstream } of [...pairs]) {
        reset(client);
        reset(upstream);
      }
      pairs.clear();
      return n;
    },
    refuse(on) {
      refusing = on;
    },
    target(port) {
      target = port;
    },
    close() {
      for (const { client, upstream } of [...pairs]) {
        client.destroy();
        upstream.destroy();
      }
      pairs.clear();
      return withTimeout(new Promise((r) => server.close(r)), 5000, 'forwarder to close');
    },
  };
  t.after(() => fwd.close());
  return fwd;
}

// ------------------------------------------------------------------ static site

/** Serves clients/js/examples and clients/js/dist on 127.0.0.1 (random port). */
export async function startSite(t) {
  const server = createStaticServer(JS_ROOT);
  await new Promise((r, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', r);
  });
  t.after(() =>
    withTimeout(
      new Promise((r) => {
        server.closeAllConnections();
        server.close(r);
      }),
      5000,
      'static server to close',
    ),
  );
  return { url: `http://127.0.0.1:${server.address().port}` };
}

// ------------------------------------------------------------------ Chromium

export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  // belt and braces: no name resolves, so nothing but 127.0.0.1 can be reached
  '--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1',
  '--disable-domain-reliability',
  '--disable-client-side-phishing-detection',
  '--no-pings',
];

/** Fails (never skips) when Chromium is missing. */
export function assertChromium() {
  if (!existsSync(CHROMIUM)) {
    throw new Error(
      `Chromium not found at ${CHROMIUM}. The browser e2e tests need it: apt-get update && apt-get install -y chromium ` +
        `(or set CHROMIUM_PATH to a Chromium binary).`,
    );
  }
}

/** pids of processes whose command line contains `needle` (our unique user-data-dir). */
function pidsWith(needle) {
  const pids = [];
  if (!existsSync('/proc')) return pids; // not Linux: rely on Playwright's own cleanup
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (readFileSync(`/proc/${name}/cmdline`, 'utf8').includes(needle)) pids.push(Number(name));
    } catch {
      // gone
    }
  }
  return pids;
}

/**
 * Launches Chromium (playwright-core, executablePath, a fresh temp
 * user-data-dir) and returns its persistent context. In t.after() the context
 * is closed and any process still using that user-data-dir is SIGKILLed.
 */
export async function launchChromium(t) {
  assertChromium();
  const { chromium } = await import('playwright-core');
  const { dir: userDataDir, rm } = tempDir('relay-e2e-chromium-');
  let context;
  const kill = () => {
    for (const pid of pidsWith(userDataDir)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  };
  atExit.add(kill);
  const stop = async () => {
    if (context) await withTimeout(context.close(), 10000, 'Chromium to close').catch(() => {});
    kill();
    atExit.delete(kill);
    rm();
  };
  t.after(stop);
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    timeout: 30000,
  });
  context.setDefaultTimeout(10000);
  return context;
}
