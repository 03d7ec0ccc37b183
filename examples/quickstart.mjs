// The quick start of README.md as a script: plays both sides of one token
// against a running relay (`make run`), prints every frame each side gets, and
// exits once each side has the other's message and the ack.
//
//   node examples/quickstart.mjs [ws://localhost:8080/socket]
//
// Node.js 22 and later have WebSocket built in. On Node.js 18 or 20 the
// script uses the `ws` package of clients/js (run `npm ci` there once), and
// says so when it is not installed. Exit status: 0 when both messages and the
// ack arrived, 1 otherwise.
import { createRequire } from 'node:module';

const url = process.argv[2] || 'ws://localhost:8080/socket';
const token = `demo-${Math.random().toString(36).slice(2, 10)}`;

function fail(message) {
  console.error(`quickstart: ${message}`);
  process.exit(1);
}

function webSocketClass() {
  if (typeof WebSocket !== 'undefined') return WebSocket;
  try {
    return createRequire(new URL('../clients/js/package.json', import.meta.url))('ws');
  } catch {
    return fail(
      `Node.js ${process.version} has no built-in WebSocket (Node.js 22 and later have one). ` +
        'Run this with Node.js 22 or later, or run `npm ci` in clients/js once so that its `ws` package is used.',
    );
  }
}

const WS = webSocketClass();
const sockets = [];
const seen = new Set();
const timer = setTimeout(() => fail(`timed out after 10 s; got ${[...seen].join(', ') || 'nothing'}`), 10000);

// open connects one env and resolves on relay.hello: from then on relay
// delivers to it (a message sent to an env before that is not held for it).
function open(env) {
  return new Promise((resolve) => {
    const ws = new WS(`${url}?v=1&token=${token}&env=${env}`);
    sockets.push(ws);
    let opened = false;
    ws.onopen = () => (opened = true);
    ws.onerror = () => {
      if (!opened) fail(`cannot connect to ${url}: is relay running (make run)?`);
    };
    ws.onclose = (e) => {
      if (!finished) fail(`${env} closed before the end: ${e.code} ${e.reason}`);
    };
    ws.onmessage = (e) => {
      if (finished) return; // such as the presence of the other side leaving
      console.log(env, 'got', e.data);
      const { type } = JSON.parse(e.data);
      if (type === 'relay.hello') resolve(ws);
      seen.add(`${env}:${type}`);
      if (['h5:greet', 'miniapp:reply', 'miniapp:relay.ack'].every((s) => seen.has(s))) done();
    };
  });
}

let finished = false;
function done() {
  finished = true;
  clearTimeout(timer);
  for (const ws of sockets) ws.close(1000);
}

const h5 = await open('h5');
const mini = await open('miniapp');
mini.send(JSON.stringify({ type: 'greet', data: { text: 'hi' }, id: 'm-1' }));
h5.send('{"type":"reply","data":"hello"}');
