'use strict';
// The SDK's rules for what handle returns, its message conversions and
// decodeConfig, in-process through call() (the same code the gRPC stream runs).
// plugins/e2e tests run plugins built on it through relay.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { call, reject, decodeConfig, Message } = require('..');

const msg = () => new Message({ type: 'addMaterial', data: { id: 1, name: 'chair' }, from: 'h5', id: 'm-1' });

test('returning the message passes it on, changed or not', async () => {
  const pass = await call({ handle: (m) => m }, msg());
  assert.equal(pass.messages.length, 1);
  assert.deepEqual(pass.messages[0].data, { id: 1, name: 'chair' });
  assert.equal(pass.messages[0].from, 'h5');
  assert.equal(pass.messages[0].to, null);
  const changed = await call({ handle: (m) => { m.data.stamp = 5; m.to = ['miniapp']; return m; } }, msg());
  assert.deepEqual(changed.messages[0].data, { id: 1, name: 'chair', stamp: 5 });
  assert.deepEqual(changed.messages[0].to, ['miniapp']);
});

test('data never read goes back byte for byte', async () => {
  const { fromProto, toProto } = require('..')._wire;
  const big = '{"n":12345678901234567890,"x":1.0}';
  const wire = { type: 't', data: Buffer.from(big), to: [], has_to: false, id: '', from: 'h5', ts: '1', claims: Buffer.alloc(0) };
  assert.equal(toProto(fromProto(wire)).data.toString(), big);
  const read = fromProto(wire);
  void read.data.n; // read: sent as JSON.stringify of the value
  assert.equal(toProto(read).data.toString(), '{"n":12345678901234567000,"x":1}');
});

test('an array fans out, [] and null drop', async () => {
  const fan = await call({ handle: (m) => [m, new Message({ type: 'copy', data: 2 })] }, msg());
  assert.deepEqual(fan.messages.map((m) => m.type), ['addMaterial', 'copy']);
  assert.deepEqual(await call({ handle: () => [] }, msg()), { drop: {} });
  assert.deepEqual(await call({ handle: () => null }, msg()), { drop: {} });
});

test('reject returned or thrown refuses; other errors and undefined are failures', async () => {
  assert.deepEqual(await call({ handle: () => reject('no_chairs', 'out of chairs') }, msg()), {
    reject: { code: 'no_chairs', message: 'out of chairs' },
  });
  assert.deepEqual(await call({ handle: async () => { throw reject('bad', 'no'); } }, msg()), {
    reject: { code: 'bad', message: 'no' },
  });
  assert.deepEqual(await call({ handle: () => { throw new Error('db down'); } }, msg()), { error: { message: 'db down' } });
  const forgot = await call({ handle: () => {} }, msg());
  assert.match(forgot.error.message, /returned nothing/);
});

test('decodeConfig fills defaults and refuses unknown keys and wrong types', () => {
  assert.deepEqual(decodeConfig({ field: 'at' }, { field: 'enrichedAt', n: 1 }), { field: 'at', n: 1 });
  assert.deepEqual(decodeConfig(undefined, { a: 'x' }), { a: 'x' });
  assert.throws(() => decodeConfig({ feild: 'at' }, { field: '' }), /unknown key "feild" \(known: field\)/);
  assert.throws(() => decodeConfig({ n: '1' }, { n: 1 }), /n must be of type number, got string/);
});
