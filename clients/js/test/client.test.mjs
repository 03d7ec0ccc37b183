import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createClient, RelayError, CloseCode, isTerminalCloseCode, wxSocketFactory, socketTaskFactory } from '../dist/index.mjs';
import { FakeNet, freshToken } from './fake-socket.mjs';

const URL_ = 'wss://relay.test/socket';

/** A client on a fake network with mocked timers; closed after the test. */
function setup(t, options = {}) {
  // Date too: the send pacing measures time with Date.now(); mocked time starts at 0
  t.mock.timers.enable({ apis: ['setTimeout', 'setInterval', 'Date'] });
  const net = new FakeNet();
  const client = createClient({
    url: URL_,
    token: freshToken(),
    env: 'h5',
    socket: net.factory,
    lifecycle: false,
    random: () => 0.5,
    ...options,
  });
  const states = [];
  client.onState((state, detail) => states.push({ state, ...detail }));
  t.after(() => client.close());
  return { net, client, states };
}

const flush = () => new Promise((r) => setImmediate(r));

describe('connection URL', () => {
  test('first connect asks for v=1 with token and env, and no since', (t) => {
    const { net, client } = setup(t, { token: 'a b&c/d' });
    assert.equal(net.count, 1);
    assert.equal(client.state, 'connecting');
    const q = net.last.query;
    assert.equal(q.get('v'), '1');
    assert.equal(q.get('token'), 'a b&c/d');
    assert.equal(q.get('env'), 'h5');
    assert.equal(q.has('since'), false);
    assert.ok(net.last.url.startsWith('wss://relay.test/socket?v=1&token=a%20b%26c%2Fd&env=h5'), net.last.url);
  });

  test('a url that already has a query gets the parameters appended', (t) => {
    const { net } = setup(t, { url: 'wss://relay.test/socket?region=sh' });
    assert.match(net.last.url, /^wss:\/\/relay\.test\/socket\?region=sh&v=1&token=/);
  });

  test('reconnect resumes with since = last seq delivered', (t) => {
    const { net } = setup(t);
    net.last.hello({ seq: 0 });
    net.last.message('note', { n: 1 }, 5);
    net.last.message('note', { n: 2 }, 7);
    net.last.drop(1006);
    t.mock.timers.tick(30000);
    assert.equal(net.count, 2);
    assert.equal(net.last.query.get('since'), '7');
    assert.equal(net.last.query.get('v'), '1');
  });

  test('a live-only session resumes from the seq in relay.hello', (t) => {
    const { net, client } = setup(t);
    assert.equal(client.lastSeq, null);
    net.last.hello({ seq: 41 });
    assert.equal(client.lastSeq, 41);
    net.last.drop(1012, 'restart');
    t.mock.timers.tick(30000);
    assert.equal(net.last.query.get('since'), '41');
  });

  test('options.since resumes the very first connection (persisted cursor)', (t) => {
    const { net, client } = setup(t, { since: 12 });
    assert.equal(net.last.query.get('since'), '12');
    assert.equal(client.lastSeq, 12);
  });
});

describe('backoff in the client', () => {
  test('reconnect delays grow exponentially with jitter, up to the cap', (t) => {
    const { net, states } = setup(t, { backoffBase: 100, backoffCap: 1000 });
    const delays = [];
    for (let i = 0; i < 7; i++) {
      net.last.drop(1006);
      const s = states[states.length - 1];
      assert.equal(s.state, 'reconnecting');
      assert.equal(s.attempt, i + 1);
      delays.push(s.delay);
      const before = net.count;
      if (s.delay > 0) {
        t.mock.timers.tick(s.delay - 1);
        assert.equal(net.count, before, 'no new socket before the delay has passed');
      }
      t.mock.timers.tick(1);
      assert.equal(net.count, before + 1, 'a new socket once the delay has passed');
    }
    // random() = 0.5 → half of min(cap, base * 2^n)
    assert.deepEqual(delays, [50, 100, 200, 400, 500, 500, 500]);
  });

  test('jittered delays stay within [0, ceiling) for real random values', (t) => {
    const { net, states } = setup(t, { backoffBase: 200, backoffCap: 3000, random: Math.random });
    for (let i = 0; i < 10; i++) {
      net.last.drop(4008, 'slow consumer');
      const s = states[states.length - 1];
      const ceiling = Math.min(3000, 200 * 2 ** i);
      assert.ok(s.delay >= 0 && s.delay < ceiling, `attempt ${i + 1}: ${s.delay} not in [0, ${ceiling})`);
      t.mock.timers.tick(s.delay);
    }
    assert.equal(net.count, 11);
  });

  test('backoff resets after a connection stays good, not after a flap', (t) => {
    const { net, states } = setup(t, { backoffBase: 100, backoffCap: 100000, stableAfter: 5000 });
    const lastDelay = () => states[states.length - 1].delay;
    for (let i = 0; i < 4; i++) {
      net.last.drop(1006);
      t.mock.timers.tick(lastDelay());
    }
    assert.equal(lastDelay(), 400, 'fourth retry: 0.5 * 100 * 2^3');
    // Hello, but the connection drops before it counts as stable: keeps growing.
    net.last.hello();
    t.mock.timers.tick(4999);
    net.last.drop(1006);
    assert.equal(lastDelay(), 800);
    t.mock.timers.tick(800);
    // Now a good connection: stays up past stableAfter.
    net.last.hello();
    t.mock.timers.tick(5000);
    net.last.drop(1012);
    assert.equal(lastDelay(), 50, 'back to the base range');
    assert.equal(states[states.length - 1].attempt, 1);
  });
});

describe('4012: connection age reached', () => {
  test('reconnects at once, without backoff, resumes with since and resends what was unacked', async (t) => {
    // A backoff this long would fail the test: the reconnect must not wait for it.
    const { net, client, states } = setup(t, { backoffBase: 60000, backoffCap: 60000 });
    // Earlier drops have grown the backoff.
    for (let i = 0; i < 3; i++) {
      net.last.drop(1006);
      t.mock.timers.tick(states[states.length - 1].delay);
    }
    net.last.hello({ seq: 10 });
    net.last.message('note', { n: 1 }, 12);
    const p = client.send('pending', { x: 1 });
    const pendingId = net.last.appFrames[0].id;
    net.last.drop(CloseCode.MaxAge, 'connection age reached: reconnect now');
    const s = states[states.length - 1];
    assert.equal(s.state, 'reconnecting');
    assert.equal(s.code, 4012);
    assert.equal(s.delay, 0, 'no backoff');
    assert.equal(s.attempt, 1, 'the backoff starts over');
    const before = net.count;
    t.mock.timers.tick(0);
    assert.equal(net.count, before + 1, 'a new socket at once');
    assert.equal(net.last.query.get('since'), '12');
    net.last.hello({ seq: 12, resumed: true });
    assert.deepEqual(
      net.last.appFrames.map((f) => f.id),
      [pendingId],
      'the unacked send goes out again with its id',
    );
    net.last.ack(pendingId, 13);
    assert.equal((await p).seq, 13);
    assert.equal(client.state, 'open');
  });

  test('a reconnect that then fails backs off again from the base', (t) => {
    const { net, states } = setup(t, { backoffBase: 100, backoffCap: 100000 });
    net.last.hello();
    net.last.drop(4012);
    t.mock.timers.tick(0);
    net.last.drop(1006); // the immediate reconnect failed
    assert.equal(states[states.length - 1].delay, 100, 'second attempt: 0.5 * 100 * 2^1');
  });

  test('before relay.hello it is no age: the usual backoff applies', (t) => {
    const { net, states } = setup(t, { backoffBase: 100 });
    net.last.open();
    net.last.drop(4012);
    assert.equal(states[states.length - 1].delay, 50);
  });
});

describe('close codes', () => {
  for (const [code, errCode] of [
    [4501, 'unauthorized'],
    [4503, 'env_not_allowed'],
    [4504, 'too_many_connections'],
    [4599, 'closed'],
  ]) {
    test(`terminal ${code}: state closed with the code, no reconnect, pending rejected`, async (t) => {
      const { net, client, states } = setup(t);
      const p = client.send('note', 1);
      net.last.open();
      net.last.drop(code, 'nope');
      assert.equal(client.state, 'closed');
      assert.deepEqual(
        { state: states.at(-1).state, code: states.at(-1).code, reason: states.at(-1).reason },
        { state: 'closed', code, reason: 'nope' },
      );
      await assert.rejects(p, (e) => e instanceof RelayError && e.code === errCode && e.closeCode === code);
      t.mock.timers.tick(10 * 60 * 1000);
      assert.equal(net.count, 1, 'never reconnects');
      await assert.rejects(client.send('x'), (e) => e.code === 'closed');
    });
  }

  test('4502 replaced: state replaced, no reconnect', async (t) => {
    const { net, client, states } = setup(t);
    net.last.hello();
    const p = client.send('note', 1);
    net.last.drop(CloseCode.Replaced, 'replaced');
    assert.equal(client.state, 'replaced');
    assert.equal(states.at(-1).state, 'replaced');
    assert.equal(states.at(-1).code, 4502);
    await assert.rejects(p, (e) => e.code === 'replaced');
    t.mock.timers.tick(10 * 60 * 1000);
    assert.equal(net.count, 1);
  });

  for (const code of [1000, 1006, 1009, 1011, 1012, 4000, 4008, 4029, 4499]) {
    test(`${code} reconnects with backoff`, (t) => {
      const { net, client } = setup(t);
      net.last.hello();
      net.last.drop(code, 'x');
      assert.equal(client.state, 'reconnecting');
      t.mock.timers.tick(30000);
      assert.equal(net.count, 2);
      net.last.hello();
      assert.equal(client.state, 'open');
    });
  }

  test('isTerminalCloseCode covers exactly 4500-4999', () => {
    assert.equal(isTerminalCloseCode(4499), false);
    assert.equal(isTerminalCloseCode(4500), true);
    assert.equal(isTerminalCloseCode(4999), true);
    assert.equal(isTerminalCloseCode(5000), false);
    assert.equal(isTerminalCloseCode(1006), false);
  });
});

describe('delivery', () => {
  test('handlers get {type, data, from, seq, id, ts}; on() unsubscribes; onAny skips system frames', (t) => {
    const { net, client } = setup(t);
    const got = [];
    const any = [];
    const off = client.on('addMaterial', (m) => got.push(m));
    client.onAny((m) => any.push(m.type));
    net.last.hello({ peers: ['miniapp'] });
    net.last.frame({ type: 'addMaterial', data: { a: 1 }, from: 'miniapp', seq: 3, id: 'c-x-1', ts: 123 });
    assert.deepEqual(got, [{ type: 'addMaterial', data: { a: 1 }, from: 'miniapp', seq: 3, id: 'c-x-1', ts: 123 }]);
    off();
    net.last.message('addMaterial', {}, 4);
    assert.equal(got.length, 1, 'unsubscribed handler is not called');
    net.last.frame({ type: 'relay.presence', data: { env: 'pc', online: true } });
    assert.deepEqual(any, ['addMaterial', 'addMaterial']);
  });

  test('dedupe by seq: repeats and older seqs are dropped, also across a resume', (t) => {
    const { net, client } = setup(t);
    const seqs = [];
    client.onAny((m) => seqs.push(m.seq));
    net.last.hello({ seq: 0 });
    for (const s of [1, 2, 2, 1, 3]) net.last.message('note', null, s);
    assert.deepEqual(seqs, [1, 2, 3]);
    net.last.drop(1006);
    t.mock.timers.tick(30000);
    assert.equal(net.last.query.get('since'), '3');
    net.last.hello({ seq: 5, resumed: true });
    for (const s of [2, 3, 4, 5]) net.last.message('note', null, s);
    assert.deepEqual(seqs, [1, 2, 3, 4, 5]);
    assert.equal(client.lastSeq, 5);
  });

  test('resumed:false after asking to resume emits resync; resumed:true does not', (t) => {
    const { net, client } = setup(t);
    const resyncs = [];
    client.onResync((h) => resyncs.push(h));
    net.last.hello({ seq: 0, resumed: false });
    assert.equal(resyncs.length, 0, 'no resync on a fresh live-only connect');
    net.last.message('note', null, 10);
    net.last.drop(1006);
    t.mock.timers.tick(30000);
    net.last.hello({ seq: 12, resumed: true });
    assert.equal(resyncs.length, 0);
    net.last.message('note', null, 11);
    net.last.drop(1012);
    t.mock.timers.tick(30000);
    assert.equal(net.last.query.get('since'), '11');
    net.last.hello({ seq: 3, resumed: false }); // e.g. the relay restarted and lost its history
    assert.equal(resyncs.length, 1);
    assert.equal(resyncs[0].seq, 3);
    const seqs = [];
    client.onAny((m) => seqs.push(m.seq));
    net.last.message('note', null, 4);
    assert.deepEqual(seqs, [4], 'the cursor follows the relay after a resync');
  });

  test('peers follow relay.hello and relay.presence', (t) => {
    const { net, client } = setup(t);
    net.last.hello({ peers: ['miniapp'] });
    assert.deepEqual(client.peers, ['miniapp']);
    net.last.frame({ type: 'relay.presence', data: { env: 'pc', online: true } });
    net.last.frame({ type: 'relay.presence', data: { env: 'miniapp', online: false } });
    assert.deepEqual(client.peers, ['pc']);
    const seen = [];
    client.on('relay.presence', (m) => seen.push(m.data));
    net.last.frame({ type: 'relay.presence', data: { env: 'pc', online: false } });
    assert.deepEqual(seen, [{ env: 'pc', online: false }]);
    assert.deepEqual(client.peers, []);
  });

  test('bad frames and throwing handlers are reported to onError and do not stop delivery', (t) => {
    const { net, client } = setup(t);
    const errors = [];
    const got = [];
    client.onError((e) => errors.push(e.code));
    client.on('note', () => {
      throw new Error('boom');
    });
    client.on('note', (m) => got.push(m.seq));
    net.last.hello();
    net.last.frame('not json');
    net.last.frame('"a seed-style string"');
    net.last.message('note', null, 1);
    assert.deepEqual(errors, ['bad_frame', 'bad_frame', 'handler_error']);
    assert.deepEqual(got, [1]);
  });
});

describe('sending', () => {
  test('ack resolves with {seq}; the frame carries type, data, to and a c-<random>-<n> id', async (t) => {
    const { net, client } = setup(t);
    net.last.hello();
    const p = client.send('addMaterial', { url: 'x' }, { to: ['miniapp'] });
    const f = net.last.appFrames[0];
    assert.equal(f.type, 'addMaterial');
    assert.deepEqual(f.data, { url: 'x' });
    assert.deepEqual(f.to, ['miniapp']);
    assert.match(f.id, /^c-[a-z0-9]+-\d+$/);
    assert.ok(f.id.length <= 64);
    assert.equal(client.queued, 1);
    net.last.ack(f.id, 42);
    assert.deepEqual(await p, { seq: 42 });
    assert.equal(client.queued, 0);
    const p2 = client.send('ping2', undefined, { to: 'pc' });
    const f2 = net.last.appFrames[1];
    assert.deepEqual(f2.to, ['pc']);
    assert.equal('data' in f2, false);
    assert.notEqual(f2.id, f.id);
    net.last.ack(f2.id, 43);
    assert.deepEqual(await p2, { seq: 43 });
  });

  test('relay.error with the id rejects with code, message and ref', async (t) => {
    const { net, client } = setup(t);
    const errors = [];
    client.onError((e) => errors.push(e));
    net.last.hello();
    const p = client.send('addMaterial', { bad: true });
    const id = net.last.appFrames[0].id;
    net.last.frame({
      type: 'relay.error',
      data: { id, code: 'invalid_message', message: 'data.url is required', route: 'materials', ref: 'r-123' },
    });
    await assert.rejects(p, (e) => {
      assert.ok(e instanceof RelayError);
      assert.ok(e instanceof Error);
      assert.equal(e.code, 'invalid_message');
      assert.equal(e.message, 'data.url is required');
      assert.equal(e.ref, 'r-123');
      assert.equal(e.route, 'materials');
      assert.equal(e.id, id);
      return true;
    });
    assert.equal(errors.length, 0, 'a matched error is not also reported to onError');
    net.last.frame({ type: 'relay.error', data: { code: 'invalid_json', message: 'bad', ref: 'r-9' } });
    assert.equal(errors.length, 1);
    assert.equal(errors[0].ref, 'r-9');
    assert.equal(client.queued, 0);
  });

  test('sends while offline are queued, then sent in order once open', async (t) => {
    const { net, client } = setup(t);
    const ps = [client.send('a', 1), client.send('b', 2), client.send('c', 3)];
    assert.equal(client.queued, 3);
    net.last.open();
    assert.deepEqual(net.last.appFrames, [], 'nothing is sent before relay.hello');
    net.last.hello();
    const frames = net.last.appFrames;
    assert.deepEqual(frames.map((f) => f.type), ['a', 'b', 'c']);
    frames.forEach((f, i) => net.last.ack(f.id, i + 1));
    assert.deepEqual(await Promise.all(ps), [{ seq: 1 }, { seq: 2 }, { seq: 3 }]);
  });

  test('unacked sends are resent after reconnect with the same ids, in order; acked ones are not', async (t) => {
    const { net, client } = setup(t);
    net.last.hello();
    const p1 = client.send('one', 1);
    const p2 = client.send('two', 2);
    const first = net.last.appFrames;
    net.last.ack(first[0].id, 10);
    assert.deepEqual(await p1, { seq: 10 });
    net.last.drop(1006);
    const p3 = client.send('three', 3); // while reconnecting
    t.mock.timers.tick(30000);
    const sock = net.last;
    sock.hello({ resumed: true });
    const resent = sock.appFrames;
    assert.deepEqual(resent.map((f) => f.type), ['two', 'three']);
    assert.equal(resent[0].id, first[1].id, 'same id as the first attempt');
    // sent from a state handler right when the state goes open: stays behind the resends
    let p4;
    client.onState((s) => {
      if (s === 'open' && !p4) p4 = client.send('four', 4);
    });
    sock.drop(1006);
    t.mock.timers.tick(30000);
    net.last.hello({ resumed: true });
    assert.deepEqual(net.last.appFrames.map((f) => f.type), ['two', 'three', 'four']);
    assert.deepEqual(
      net.last.appFrames.slice(0, 2).map((f) => f.id),
      resent.map((f) => f.id),
    );
    net.last.ack(resent[0].id, 11);
    net.last.ack(resent[1].id, 12);
    net.last.ack(net.last.appFrames[2].id, 13);
    assert.deepEqual(await p2, { seq: 11 });
    assert.deepEqual(await p3, { seq: 12 });
    assert.deepEqual(await p4, { seq: 13 });
  });

  test('the queue is bounded: overflow rejects the oldest with a clear error', async (t) => {
    const { net, client } = setup(t, { maxQueue: 3 });
    const p1 = client.send('m', 1);
    const rest = [client.send('m', 2), client.send('m', 3), client.send('m', 4)];
    await assert.rejects(p1, (e) => e.code === 'queue_overflow' && /maxQueue 3/.test(e.message));
    assert.equal(client.queued, 3);
    net.last.hello();
    const frames = net.last.appFrames;
    assert.deepEqual(frames.map((f) => f.data), [2, 3, 4]);
    frames.forEach((f, i) => net.last.ack(f.id, i));
    await Promise.all(rest);
  });

  test('invalid types and oversized frames are rejected without touching the queue', async (t) => {
    const { net, client } = setup(t, { maxFrameBytes: 100 });
    await assert.rejects(client.send(''), (e) => e.code === 'invalid_argument');
    await assert.rejects(client.send('relay.ping'), (e) => e.code === 'invalid_argument');
    await assert.rejects(client.send('x'.repeat(129)), (e) => e.code === 'invalid_argument');
    await assert.rejects(client.send(42), (e) => e.code === 'invalid_argument');
    await assert.rejects(client.send('big', 'é'.repeat(40)), (e) => e.code === 'too_large');
    const circular = {};
    circular.self = circular;
    await assert.rejects(client.send('c', circular), (e) => e.code === 'invalid_argument');
    assert.equal(client.queued, 0);
    net.last.hello();
    assert.equal(net.last.appFrames.length, 0, 'nothing refused locally was sent');
  });

  test('a local refusal and the relay\'s invalid_message have different codes', async (t) => {
    const { net, client } = setup(t);
    net.last.hello();
    const local = await client.send('').then(() => assert.fail('an empty type was accepted'), (e) => e);
    const p = client.send('addMaterial', { id: 1 });
    const { id } = net.last.appFrames[0];
    net.last.frame({
      type: 'relay.error',
      data: { id, code: 'invalid_message', message: 'data: missing property name', route: 'addMaterial', ref: 'r-1' },
    });
    const remote = await p.then(() => assert.fail('a refused message resolved'), (e) => e);
    assert.ok(local instanceof RelayError && remote instanceof RelayError);
    assert.equal(local.code, 'invalid_argument');
    assert.equal(local.ref, undefined, 'a local error has no relay ref');
    assert.equal(remote.code, 'invalid_message');
    assert.equal(remote.ref, 'r-1');
  });

  test('close() rejects pending sends, stops reconnecting and frees the singleton', async (t) => {
    const { net, client, states } = setup(t);
    net.last.hello();
    const p = client.send('m', 1);
    client.close();
    assert.equal(client.state, 'closed');
    assert.equal(states.at(-1).code, 1000);
    assert.deepEqual(net.last.closedByClient, { code: 1000, reason: 'client closed' });
    await assert.rejects(p, (e) => e.code === 'closed');
    t.mock.timers.tick(10 * 60 * 1000);
    assert.equal(net.count, 1);
  });
});

describe('singleton', () => {
  test('one client per url+token+env until closed', (t) => {
    t.mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
    const net = new FakeNet();
    const token = freshToken();
    const opts = { url: URL_, token, env: 'h5', socket: net.factory, lifecycle: false };
    const a = createClient(opts);
    const b = createClient({ ...opts, heartbeatInterval: 5 });
    assert.equal(a, b);
    assert.equal(net.count, 1, 'the repeat call does not open another socket');
    const other = [
      createClient({ ...opts, env: 'pc' }),
      createClient({ ...opts, token: token + 'x' }),
      createClient({ ...opts, url: URL_ + '2' }),
    ];
    for (const c of other) assert.notEqual(c, a);
    assert.equal(new Set(other).size, 3);
    a.close();
    const c = createClient(opts);
    assert.notEqual(c, a);
    assert.equal(c.state, 'connecting');
    for (const x of [c, ...other]) x.close();
  });

  test('a replaced client is released too', (t) => {
    const { net, client } = setup(t);
    net.last.drop(4502);
    const again = createClient({ url: URL_, token: new URL(net.last.url).searchParams.get('token'), env: 'h5', socket: net.factory, lifecycle: false });
    assert.notEqual(again, client);
    again.close();
  });

  test('createClient validates its options', () => {
    assert.throws(() => createClient({ token: 't', env: 'h5' }), TypeError);
    assert.throws(() => createClient({ url: URL_, env: 'h5' }), TypeError);
    assert.throws(() => createClient({ url: URL_, token: 't' }), TypeError);
  });
});

describe('heartbeat', () => {
  test('relay.ping every interval; frames keep the connection alive', (t) => {
    const { net, client } = setup(t, { heartbeatInterval: 1000, heartbeatTimeout: 2500 });
    net.last.hello();
    for (let i = 0; i < 5; i++) {
      t.mock.timers.tick(1000);
      net.last.frame({ type: 'relay.pong', data: {} });
    }
    const pings = net.last.frames.filter((f) => f.type === 'relay.ping');
    assert.equal(pings.length, 5);
    assert.deepEqual(pings[0], { type: 'relay.ping' });
    assert.equal(client.state, 'open');
    assert.equal(net.count, 1);
  });

  test('silence past the timeout closes the socket and reconnects', (t) => {
    const { net, client, states } = setup(t, { heartbeatInterval: 1000, heartbeatTimeout: 2500 });
    net.last.hello();
    const first = net.last;
    t.mock.timers.tick(2000);
    first.message('note', null, 1); // any frame counts
    t.mock.timers.tick(2499);
    assert.equal(client.state, 'open');
    assert.equal(first.closedByClient, null);
    t.mock.timers.tick(1);
    assert.ok(first.closedByClient, 'the dead socket is closed');
    assert.equal(client.state, 'reconnecting');
    assert.equal(states.at(-1).reason, 'heartbeat timeout');
    t.mock.timers.tick(30000);
    assert.equal(net.count, 2);
    assert.equal(net.last.query.get('since'), '1');
    // events from the abandoned socket are ignored
    first.drop(4502);
    assert.equal(client.state, 'reconnecting');
  });

  test('connect timeout abandons a socket that never opens', (t) => {
    const { net, client } = setup(t, { connectTimeout: 3000 });
    t.mock.timers.tick(3000);
    assert.ok(net.sockets[0].closedByClient);
    assert.equal(client.state, 'reconnecting');
    t.mock.timers.tick(30000);
    assert.equal(net.count, 2);
  });

  test('app hide pauses the heartbeat; show resumes it and skips a pending backoff', (t) => {
    let show;
    let hide;
    const removed = [];
    const lifecycle = {
      onShow: (cb) => (show = cb),
      onHide: (cb) => (hide = cb),
      offShow: (cb) => removed.push(cb === show && 'show'),
      offHide: (cb) => removed.push(cb === hide && 'hide'),
    };
    const { net, client } = setup(t, {
      lifecycle,
      heartbeatInterval: 1000,
      heartbeatTimeout: 2500,
      backoffBase: 60000,
      backoffCap: 60000,
    });
    net.last.hello();
    hide();
    t.mock.timers.tick(60000);
    assert.equal(net.last.frames.length, 0, 'no pings while hidden');
    assert.equal(client.state, 'open', 'no heartbeat timeout while hidden');
    show();
    assert.deepEqual(net.last.frames, [{ type: 'relay.ping' }], 'probes right away on show');
    t.mock.timers.tick(2500);
    assert.equal(client.state, 'reconnecting', 'a socket that died in the background is detected');
    assert.equal(net.count, 1);
    show(); // skip the 30 s backoff
    assert.equal(net.count, 2);
    client.close();
    assert.deepEqual(removed, ['show', 'hide']);
  });

  test('uses wx.onAppShow/onAppHide by default when they exist', (t) => {
    t.mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
    const calls = [];
    globalThis.wx = {
      onAppShow: (cb) => calls.push(['onAppShow', typeof cb]),
      onAppHide: (cb) => calls.push(['onAppHide', typeof cb]),
      offAppShow: () => calls.push(['offAppShow']),
      offAppHide: () => calls.push(['offAppHide']),
    };
    t.after(() => delete globalThis.wx);
    const net = new FakeNet();
    const client = createClient({ url: URL_, token: freshToken(), env: 'h5', socket: net.factory });
    client.close();
    assert.deepEqual(calls, [['onAppShow', 'function'], ['onAppHide', 'function'], ['offAppShow'], ['offAppHide']]);
  });
});

describe('transports', () => {
  test('a factory returning a Promise (connectContainer-style) works, and a rejected one retries', async (t) => {
    t.mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
    const net = new FakeNet();
    let fail = true;
    const factory = (url, events, options) =>
      fail ? Promise.reject({ errMsg: 'connectContainer:fail' }) : Promise.resolve(net.factory(url, events, options));
    const client = createClient({ url: URL_, token: freshToken(), env: 'h5', socket: factory, lifecycle: false, random: () => 0.5 });
    t.after(() => client.close());
    const states = [];
    client.onState((s, d) => states.push([s, d.reason]));
    await flush();
    assert.deepEqual(states, [['reconnecting', 'connectContainer:fail']]);
    fail = false;
    t.mock.timers.tick(30000);
    await flush();
    net.last.hello();
    assert.equal(client.state, 'open');
  });

  test('a factory that throws is retried with backoff', (t) => {
    t.mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
    let n = 0;
    const net = new FakeNet();
    const factory = (...a) => {
      if (n++ === 0) throw new Error('no socket today');
      return net.factory(...a);
    };
    const client = createClient({ url: URL_, token: freshToken(), env: 'h5', socket: factory, lifecycle: false });
    t.after(() => client.close());
    assert.equal(client.state, 'reconnecting');
    t.mock.timers.tick(30000);
    assert.equal(net.count, 1);
  });
});

/** A SocketTask double with the WeChat callback shapes. */
function fakeTask() {
  const task = { sent: [], closed: [], cb: {} };
  for (const k of ['onOpen', 'onMessage', 'onClose', 'onError']) task[k] = (cb) => (task.cb[k] = cb);
  task.send = (o) => task.sent.push(o.data);
  task.close = (o) => task.closed.push({ code: o.code, reason: o.reason });
  return task;
}

describe('SocketTask adapters', () => {
  test('wxSocketFactory maps the SocketTask callbacks; a missing close code counts as 1006', (t) => {
    t.mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
    const tasks = [];
    const fakeWx = { connectSocket: (req) => (tasks.push({ req, task: fakeTask() }), tasks.at(-1).task) };
    const client = createClient({ url: URL_, token: freshToken(), env: 'miniapp', socket: wxSocketFactory(fakeWx), lifecycle: false, random: () => 0.5 });
    t.after(() => client.close());
    const got = [];
    client.on('note', (m) => got.push(m.data));
    const { req, task } = tasks[0];
    assert.match(req.url, /\?v=1&token=/);
    assert.equal('protocols' in req, false, 'no subprotocol unless asked for');
    task.cb.onOpen({});
    task.cb.onMessage({ data: JSON.stringify({ type: 'relay.hello', data: { seq: 0, peers: [] } }) });
    task.cb.onMessage({ data: JSON.stringify({ type: 'note', data: 'hi', seq: 1 }) });
    assert.equal(client.state, 'open');
    assert.deepEqual(got, ['hi']);
    client.send('note', 'x').catch(() => {});
    assert.equal(JSON.parse(task.sent[0]).type, 'note');
    task.cb.onClose({}); // some devices omit the code
    assert.equal(client.state, 'reconnecting');
    t.mock.timers.tick(30000);
    assert.equal(tasks.length, 2);
  });

  test('wx.connectSocket failing before a task opens leads to a retry', async (t) => {
    t.mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
    const tasks = [];
    const fakeWx = {
      connectSocket: (req) => {
        const task = fakeTask();
        tasks.push(task);
        if (tasks.length === 1) setImmediate(() => req.fail({ errMsg: 'connectSocket:fail url not in domain list' }));
        return task;
      },
    };
    const client = createClient({ url: URL_, token: freshToken(), env: 'miniapp', socket: wxSocketFactory(fakeWx), lifecycle: false, random: () => 0.5 });
    t.after(() => client.close());
    const states = [];
    client.onState((s, d) => states.push([s, d.reason]));
    await flush();
    assert.deepEqual(states, [['reconnecting', 'connectSocket:fail url not in domain list']]);
    tasks[0].cb.onClose({ code: 1006 }); // a late close from the failed task is ignored
    assert.equal(states.length, 1);
    t.mock.timers.tick(30000);
    assert.equal(tasks.length, 2);
  });

  test('socketTaskFactory accepts a task or a Promise of one (uni-app / Taro)', async (t) => {
    t.mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
    const task = fakeTask();
    const urls = [];
    const client = createClient({
      url: URL_, token: freshToken(), env: 'app', lifecycle: false,
      socket: socketTaskFactory((url) => (urls.push(url), Promise.resolve(task))),
    });
    t.after(() => client.close());
    await flush();
    task.cb.onOpen();
    task.cb.onMessage({ data: '{"type":"relay.hello","data":{"seq":0}}' });
    assert.equal(client.state, 'open');
    assert.equal(urls.length, 1);
    client.close(4000, 'bye');
    assert.deepEqual(task.closed, [{ code: 4000, reason: 'bye' }]);
  });
});

describe('pacing to the limits in relay.hello', () => {
  const limits = (messagesPerSecond, burst, extra = {}) => ({ limits: { messagesPerSecond, burst, maxFrameBytes: 65536, ...extra } });
  // Mocked Date.now() jumps to the end of a tick() before the timers inside it run, so
  // time advances 1 ms at a time here, for the exact instants at which tokens are due.
  const tick = (t, ms) => {
    for (let i = 0; i < ms; i++) t.mock.timers.tick(1);
  };
  const types = (sock) => sock.frames.map((f) => (f.type === 'relay.ping' ? 'ping' : f.data));

  test('a backlog goes out as a burst of burst − 5%, then at 90% of the rate, in order, one queue with later sends', async (t) => {
    const { net, client } = setup(t, { heartbeatInterval: 0 });
    const ps = [];
    for (let i = 0; i < 300; i++) ps.push(client.send('m', i));
    net.last.hello(limits(100, 200)); // bucket: 190 tokens, 90 per second
    const sock = net.last;
    assert.equal(sock.sent.length, 190, 'the burst');
    const late = client.send('m', 'late'); // queued behind the backlog
    assert.equal(sock.sent.length, 190);
    tick(t, 11);
    assert.equal(sock.sent.length, 190, 'no token before 1000/90 ms');
    tick(t, 1);
    assert.equal(sock.sent.length, 191, 'one token after 12 ms');
    tick(t, 988); // t = 1000 ms: 90 tokens
    assert.ok(sock.sent.length >= 279 && sock.sent.length <= 280, `${sock.sent.length} after 1 s`);
    tick(t, 300);
    assert.deepEqual(types(sock), [...Array.from({ length: 300 }, (_, i) => i), 'late'], 'everything, in order, once');
    sock.frames.forEach((f, i) => sock.ack(f.id, i + 1));
    assert.equal((await Promise.all(ps)).length, 300);
    assert.deepEqual(await late, { seq: 301 });
    assert.equal(client.queued, 0);
    // idle refills the bucket up to its capacity, not beyond
    tick(t, 60000);
    for (let i = 0; i < 200; i++) client.send('n', i).catch(() => {});
    assert.equal(sock.sent.length, 301 + 190);
  });

  test('relay.ping takes a token too and waits its turn behind queued sends', (t) => {
    const { net, client } = setup(t, { heartbeatInterval: 150, heartbeatTimeout: 100000 });
    for (let i = 0; i < 5; i++) client.send('m', i).catch(() => {});
    net.last.hello(limits(10, 3)); // bucket: 2 tokens, 9 per second (one per 112 ms)
    assert.deepEqual(types(net.last), [0, 1]);
    tick(t, 112);
    assert.deepEqual(types(net.last), [0, 1, 2]);
    tick(t, 38); // t = 150: the ping is queued behind 3 and 4
    assert.deepEqual(types(net.last), [0, 1, 2]);
    tick(t, 300); // t = 450: the second ping is not queued twice
    assert.deepEqual(types(net.last), [0, 1, 2, 3, 4, 'ping']);
  });

  test('messagesPerSecond 0, or no limits at all, means no pacing', (t) => {
    const { net, client } = setup(t);
    for (let i = 0; i < 500; i++) client.send('m', i).catch(() => {});
    net.last.hello(limits(0, 0));
    assert.equal(net.last.sent.length, 500);
    net.last.drop(1006);
    tick(t, 30000);
    net.last.hello({ resumed: true }); // a relay that announces no limits
    assert.equal(net.last.sent.length, 500);
    for (let i = 0; i < 300; i++) client.send('n', i).catch(() => {});
    assert.equal(net.last.sent.length, 800);
  });

  test('every connection takes its limits, and a full bucket, from its own relay.hello', (t) => {
    const { net, client } = setup(t);
    for (let i = 0; i < 20; i++) client.send('m', i).catch(() => {});
    net.last.hello(limits(10, 10)); // 9 tokens
    assert.equal(net.last.sent.length, 9);
    net.last.drop(1006);
    tick(t, 30000);
    net.last.hello({ resumed: true, ...limits(1000, 100) }); // 95 tokens
    assert.deepEqual(types(net.last), Array.from({ length: 20 }, (_, i) => i), 'all 20 unacked, resent at once');
    net.last.drop(1006);
    tick(t, 30000);
    net.last.hello({ resumed: true, ...limits(1, 1) }); // 1 token, then one per 1112 ms
    assert.equal(net.last.sent.length, 1);
    tick(t, 1111);
    assert.equal(net.last.sent.length, 1);
    tick(t, 1);
    assert.equal(net.last.sent.length, 2);
    const dead = net.last;
    dead.drop(1006); // nothing more is sent on a dead connection: its timer is gone
    tick(t, 5000);
    assert.equal(dead.sent.length, 2);
  });

  test('maxFrameBytes from relay.hello replaces the default; a queued send too large for it is refused at hello', async (t) => {
    const { net, client } = setup(t);
    const big = 'x'.repeat(1000);
    const queued = client.send('m', big); // fine for the default 65536
    const small = client.send('m', 'ok');
    net.last.hello(limits(0, 0, { maxFrameBytes: 512 }));
    await assert.rejects(queued, (e) => e.code === 'too_large' && /512/.test(e.message), 'refused at hello, never sent');
    assert.deepEqual(types(net.last), ['ok']);
    await assert.rejects(client.send('m', big), (e) => e.code === 'too_large');
    net.last.ack(net.last.frames[0].id, 1);
    await small;
    assert.equal(client.queued, 0);
  });

  test('an explicit maxFrameBytes wins over relay.hello', (t) => {
    const { net, client } = setup(t, { maxFrameBytes: 100000 });
    net.last.hello(limits(0, 0, { maxFrameBytes: 512 }));
    client.send('m', 'x'.repeat(1000)).catch(() => {});
    assert.equal(net.last.sent.length, 1);
  });

  test('the heartbeat interval comes from relay.hello (at least 5 s) unless heartbeatInterval is set', (t) => {
    const { net, client } = setup(t);
    net.last.hello({ heartbeat: 8000 });
    const pings = () => net.last.frames.filter((f) => f.type === 'relay.ping').length;
    tick(t, 7999);
    assert.equal(pings(), 0);
    tick(t, 1);
    assert.equal(pings(), 1);
    // the timeout follows: interval + 10 s of silence (since relay.hello, the last frame)
    tick(t, 9999);
    assert.equal(client.state, 'open');
    tick(t, 1);
    assert.equal(client.state, 'reconnecting');
    tick(t, 30000);
    net.last.hello({ heartbeat: 1000 }); // too eager: 5 s
    tick(t, 4999);
    assert.equal(pings(), 0);
    tick(t, 1);
    assert.equal(pings(), 1);
  });

  test('an explicit heartbeatInterval wins over relay.hello', (t) => {
    const { net } = setup(t, { heartbeatInterval: 3000 });
    net.last.hello({ heartbeat: 8000 });
    tick(t, 3000);
    assert.equal(net.last.frames.filter((f) => f.type === 'relay.ping').length, 1);
  });

  test('rate_limited (no route): the send goes back to its place in the queue and is resent after a token; a route\'s rate_limited is final', async (t) => {
    const { net, client } = setup(t);
    const errors = [];
    client.onError((e) => errors.push(e));
    net.last.hello(limits(100, 10)); // 9 tokens, then one per 12 ms
    const sock = net.last;
    const ps = ['a', 'b', 'c', 'd', 'e'].map((x) => client.send('m', x));
    assert.deepEqual(types(sock), ['a', 'b', 'c', 'd', 'e']);
    const id = (x) => sock.frames.find((f) => f.data === x).id;
    const refuse = (x, extra = {}) =>
      sock.frame({ type: 'relay.error', data: { id: id(x), code: 'rate_limited', message: 'too many messages: slow down', ref: 'r', ...extra } });
    sock.ack(id('a'), 1);
    refuse('b');
    refuse('c');
    sock.ack(id('d'), 2); // already accepted: stays accepted (the ordering caveat)
    sock.ack(id('e'), 3);
    const f = client.send('m', 'f'); // after the retries
    assert.equal(sock.sent.length, 5, 'the bucket was emptied');
    tick(t, 11);
    assert.equal(sock.sent.length, 5);
    tick(t, 1);
    assert.deepEqual(types(sock).slice(5), ['b']);
    tick(t, 24);
    assert.deepEqual(types(sock).slice(5), ['b', 'c', 'f']);
    assert.equal(sock.frames[5].id, id('b'), 'same id');
    // c is refused once more: back in front of anything queued after it
    refuse('c');
    const g = client.send('m', 'g');
    tick(t, 24);
    assert.deepEqual(types(sock).slice(5), ['b', 'c', 'f', 'c', 'g']);
    sock.ack(id('b'), 4);
    sock.ack(id('c'), 5);
    sock.ack(sock.frames[7].id, 6);
    sock.ack(sock.frames[9].id, 7);
    assert.deepEqual(await Promise.all([...ps, f, g]), [1, 4, 5, 2, 3, 6, 7].map((seq) => ({ seq })));
    // a route's own rate limit is the app's policy: rejected as before
    const h = client.send('addMaterial', 'h');
    tick(t, 12);
    assert.equal(types(sock).at(-1), 'h');
    sock.frame({ type: 'relay.error', data: { id: sock.frames.at(-1).id, code: 'rate_limited', message: 'at most 20 per second', route: 'addMaterial', ref: 'r2' } });
    await assert.rejects(h, (e) => e.code === 'rate_limited' && e.route === 'addMaterial');
    assert.equal(client.queued, 0);
    assert.deepEqual(errors, []);
  });

  test('rate_limited from a relay that announced no limits pauses sending for a second', async (t) => {
    const { net, client } = setup(t);
    net.last.hello();
    const p = client.send('m', 'a');
    const first = net.last.frames[0];
    net.last.frame({ type: 'relay.error', data: { id: first.id, code: 'rate_limited', message: 'slow down', ref: 'r' } });
    client.send('m', 'b').catch(() => {});
    assert.equal(net.last.sent.length, 1);
    tick(t, 999);
    assert.equal(net.last.sent.length, 1);
    tick(t, 1);
    assert.deepEqual(types(net.last), ['a', 'a', 'b']);
    net.last.ack(first.id, 9);
    assert.deepEqual(await p, { seq: 9 });
  });

  test('unavailable and unconfirmed: the send is resent with the same id after a growing backoff, never rejected', async (t) => {
    const { net, client } = setup(t);
    const errors = [];
    client.onError((e) => errors.push(e));
    net.last.hello();
    const sock = net.last;
    const ps = ['a', 'b', 'c'].map((x) => client.send('m', x));
    assert.deepEqual(types(sock), ['a', 'b', 'c']);
    const id = (x) => sock.frames.find((f) => f.data === x).id;
    const refuse = (x, code) =>
      sock.frame({ type: 'relay.error', data: { id: id(x), code, message: 'backplane', ref: 'r', route: 'all' } });
    refuse('a', 'unavailable'); // certainly not relayed
    refuse('b', 'unconfirmed'); // maybe relayed: the resend is deduplicated by its id
    sock.ack(id('c'), 3);
    const d = client.send('m', 'd'); // waits behind the resends
    tick(t, 374); // 250 ms + jitter (random 0.5 of 250), then 250 + 0.5·500 for the second refusal
    assert.equal(sock.sent.length, 3, 'held back');
    tick(t, 126);
    assert.deepEqual(types(sock).slice(3), ['a', 'b', 'd']);
    assert.deepEqual(sock.frames.slice(3, 5).map((f) => f.id), [id('a'), id('b')], 'same ids');
    // refused again: held back again, from the start of the backoff after an ack
    sock.ack(id('b'), 2);
    refuse('a', 'unavailable');
    tick(t, 374);
    assert.equal(sock.sent.length, 6);
    tick(t, 1);
    assert.deepEqual(types(sock).slice(6), ['a']);
    sock.ack(id('a'), 4);
    sock.ack(sock.frames[5].id, 5);
    assert.deepEqual(await Promise.all([...ps, d]), [4, 2, 3, 5].map((seq) => ({ seq })));
    assert.deepEqual(errors, []);
  });

  test('a send given up on (queue overflow) while waiting for a token is not sent', async (t) => {
    const { net, client } = setup(t, { maxQueue: 3 });
    const ps = [1, 2, 3].map((i) => client.send('m', i));
    net.last.hello(limits(10, 2)); // 1 token
    assert.deepEqual(types(net.last), [1]);
    const p4 = client.send('m', 4); // overflow: 1 (sent, unacked) is given up
    await assert.rejects(ps[0], (e) => e.code === 'queue_overflow');
    const p5 = client.send('m', 5); // overflow: 2 (waiting) is given up
    await assert.rejects(ps[1], (e) => e.code === 'queue_overflow');
    tick(t, 2000);
    assert.deepEqual(types(net.last), [1, 3, 4, 5]);
    for (const p of [p4, p5, ps[2]]) p.catch(() => {});
  });
});

describe('credentials and refresh', () => {
  const b64u = (s) => Buffer.from(s, 'utf8').toString('base64url');

  test('base64url matches Node for ASCII, multi-byte and astral text, without padding', async () => {
    const { base64url } = await import('../dist/index.mjs');
    for (const s of ['', 'a', 'ab', 'abc', 'eyJhbGciOiJIUzI1NiJ9.e30.sig', 'pärchen-配对-😀', '\u00ff\u0800?>']) {
      assert.equal(base64url(s), b64u(s), JSON.stringify(s));
    }
  });

  test('a string token goes in the query by default, and in a header or a subprotocol when chosen', (t) => {
    const a = setup(t, { token: 'jwt-a', credential: 'header' });
    assert.equal(a.net.last.query.has('token'), false);
    assert.deepEqual(a.net.last.options.headers, { Authorization: 'Bearer jwt-a' });
  });

  test('a string token as a subprotocol: relay.v1 and relay.auth.<base64url> after the app\'s own', (t) => {
    const b = setup(t, { token: 'jwt-b', credential: 'subprotocol', protocols: ['x.app'] });
    assert.equal(b.net.last.query.has('token'), false);
    assert.deepEqual(b.net.last.options.protocols, ['x.app', 'relay.v1', 'relay.auth.' + b64u('jwt-b')]);
    assert.equal(b.net.last.options.headers, undefined);
  });

  test('an unknown credential transport is refused', () => {
    assert.throws(() => createClient({ url: URL_, token: 't', env: 'h5', credential: 'cookie' }), TypeError);
  });

  test('a token function is called before each connection; the credential goes as a subprotocol, never in the URL', async (t) => {
    let n = 0;
    const { net, client } = setup(t, { token: async () => `jwt-${++n}` });
    assert.equal(net.count, 0, 'no socket before the credential is there');
    await flush();
    assert.equal(net.count, 1);
    assert.equal(net.last.query.has('token'), false);
    assert.doesNotMatch(net.last.url, /jwt-/);
    assert.deepEqual(net.last.options.protocols, ['relay.v1', 'relay.auth.' + b64u('jwt-1')]);
    net.last.hello({ seq: 3 });
    assert.equal(client.state, 'open');
    net.last.drop(1006);
    t.mock.timers.tick(30000);
    await flush();
    assert.equal(net.count, 2);
    assert.deepEqual(net.last.options.protocols, ['relay.v1', 'relay.auth.' + b64u('jwt-2')], 'a fresh credential');
    assert.equal(net.last.query.get('since'), '3');
  });

  test('createClient with the same token function, url and env returns the same client; another function another', async (t) => {
    const fn = () => 'jwt';
    const { client } = setup(t, { token: fn });
    assert.equal(createClient({ url: URL_, token: fn, env: 'h5' }), client);
    const other = createClient({ url: URL_, token: () => 'jwt', env: 'h5', socket: new FakeNet().factory, lifecycle: false });
    t.after(() => other.close());
    assert.notEqual(other, client);
  });

  test('a token function that fails or returns no string: onError token_error, and the client retries with backoff', async (t) => {
    let calls = 0;
    const results = [() => Promise.reject(new Error('backend down')), () => '', () => 'jwt-ok'];
    const { net, client, states } = setup(t, { token: () => results[calls++]() });
    const errors = [];
    client.onError((e) => errors.push(e));
    await flush();
    assert.equal(net.count, 0);
    assert.deepEqual(errors.map((e) => e.code), ['token_error']);
    assert.equal(errors[0].cause.message, 'backend down');
    assert.equal(client.state, 'reconnecting');
    t.mock.timers.tick(30000);
    await flush();
    assert.deepEqual(errors.map((e) => e.code), ['token_error', 'token_error']);
    t.mock.timers.tick(30000);
    await flush();
    assert.equal(net.count, 1);
    assert.equal(calls, 3);
    net.last.hello();
    assert.equal(states.at(-1).state, 'open');
  });

  test('token_expired: a fresh credential goes out as relay.refresh ahead of queued sends; its ack and the warning are no errors', async (t) => {
    let n = 0;
    const { net, client } = setup(t, { token: () => `jwt-${++n}` });
    await flush();
    const errors = [];
    const seen = [];
    client.onError((e) => errors.push(e));
    client.on('relay.error', (m) => seen.push(m.data.code));
    // one frame per second: the sends below wait in the queue
    net.last.hello({ limits: { messagesPerSecond: 1, burst: 1 } });
    const sends = [client.send('note', { n: 1 }), client.send('note', { n: 2 })];
    assert.equal(net.last.appFrames.length, 1);
    net.last.frame({ type: 'relay.error', data: { code: 'token_expired', message: 'the credential expires in 4s' } });
    await flush();
    assert.equal(n, 2, 'the function was called for the refresh');
    t.mock.timers.tick(1200);
    const frames = net.last.appFrames;
    assert.equal(frames.length, 2);
    assert.equal(frames[1].type, 'relay.refresh', 'the refresh jumps the queue');
    assert.deepEqual(frames[1].data, { token: 'jwt-2' });
    assert.equal(typeof frames[1].id, 'string');
    net.last.ack(frames[1].id, 0);
    net.last.ack(frames[0].id, 10);
    t.mock.timers.tick(1200);
    assert.equal(net.last.appFrames[2].data.n, 2);
    net.last.ack(net.last.appFrames[2].id, 11);
    assert.deepEqual((await Promise.all(sends)).map((r) => r.seq), [10, 11]);
    assert.deepEqual(errors, []);
    assert.deepEqual(seen, ['token_expired'], 'on("relay.error") still sees the warning');
    assert.equal(client.state, 'open');
  });

  test('token_expired with a string token cannot be refreshed: it goes to onError and nothing is sent', (t) => {
    const { net, client } = setup(t);
    const errors = [];
    client.onError((e) => errors.push(e));
    net.last.hello();
    net.last.frame({ type: 'relay.error', data: { code: 'token_expired', message: 'soon' } });
    assert.deepEqual(errors.map((e) => e.code), ['token_expired']);
    assert.deepEqual(net.last.appFrames, []);
  });

  test('a refused refresh reaches onError', async (t) => {
    const { net, client } = setup(t, { token: () => 'jwt' });
    await flush();
    const errors = [];
    client.onError((e) => errors.push(e));
    net.last.hello();
    net.last.frame({ type: 'relay.error', data: { code: 'token_expired', message: 'soon' } });
    await flush();
    const r = net.last.appFrames.find((f) => f.type === 'relay.refresh');
    net.last.frame({ type: 'relay.error', data: { code: 'unauthorized', message: 'another pairing key', id: r.id } });
    assert.deepEqual(errors.map((e) => [e.code, e.id]), [['unauthorized', r.id]]);
    // a refresh refused as expired itself is reported, not answered with yet another refresh
    net.last.frame({ type: 'relay.error', data: { code: 'token_expired', message: 'expired', id: r.id } });
    await flush();
    assert.deepEqual(errors.map((e) => e.code), ['unauthorized', 'token_expired']);
    assert.equal(net.last.appFrames.filter((f) => f.type === 'relay.refresh').length, 1);
  });

  test('4501 closing an open session: a token function reconnects with a new credential', async (t) => {
    let n = 0;
    const fn = setup(t, { token: () => `jwt-${++n}` });
    await flush();
    fn.net.last.hello({ seq: 9 });
    fn.net.last.drop(4501, 'unauthorized');
    assert.equal(fn.client.state, 'reconnecting');
    t.mock.timers.tick(30000);
    await flush();
    assert.equal(fn.net.count, 2);
    assert.equal(fn.net.last.query.get('since'), '9');
    assert.deepEqual(fn.net.last.options.protocols, ['relay.v1', 'relay.auth.' + b64u('jwt-2')]);
  });

  test('4501 closing an open session with a string token is final', (t) => {
    const str = setup(t, { token: 'jwt-s', credential: 'subprotocol' });
    str.net.last.hello();
    str.net.last.drop(4501, 'unauthorized');
    assert.equal(str.client.state, 'closed');
  });

  test('4501 before relay.hello is final even with a token function (the credential was refused)', async (t) => {
    const { net, client } = setup(t, { token: () => 'jwt' });
    await flush();
    net.last.open();
    net.last.drop(4501, 'unauthorized');
    assert.equal(client.state, 'closed');
  });

  test('close() while the token function is pending: no socket is opened', async (t) => {
    let release;
    const { net, client } = setup(t, { token: () => new Promise((r) => (release = r)) });
    client.close();
    release('jwt');
    await flush();
    assert.equal(net.count, 0);
  });

  test('wx.connectSocket and npm ws get the credential as a header', async (t) => {
    const calls = [];
    const task = { onOpen() {}, onMessage() {}, onClose() {}, onError() {}, send() {}, close() {} };
    const wxApi = { connectSocket: (req) => (calls.push(req), task) };
    const c = createClient({ url: URL_, token: 'jwt-w', env: 'miniapp', credential: 'header', socket: wxSocketFactory(wxApi), lifecycle: false });
    t.after(() => c.close());
    assert.deepEqual(calls[0].header, { Authorization: 'Bearer jwt-w' });
    assert.doesNotMatch(calls[0].url, /jwt-w/);
    const { webSocketFactory } = await import('../dist/index.mjs');
    const made = [];
    class WS {
      constructor(...args) {
        made.push(args);
      }
      send() {}
      close() {}
    }
    const ws = createClient({ url: URL_, token: 'jwt-n', env: 'h5', credential: 'header', socket: webSocketFactory(WS), lifecycle: false });
    t.after(() => ws.close());
    assert.deepEqual(made[0][2], { headers: { Authorization: 'Bearer jwt-n' } });
  });
});
