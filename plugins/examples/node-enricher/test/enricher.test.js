'use strict';
// The plugin's logic through the SDK's call(), in-process (plugins/e2e_test.go
// runs it through relay).
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { call, Message } = require('@pairrelay/plugin-sdk');
const plugin = require('..');

test('stamps any message type it is given', async () => {
  plugin.configure({ field: 'at', source: 'test' });
  for (const type of ['addMaterial', 'note']) {
    const out = await call(plugin, new Message({ type, data: { title: 'chair' } }));
    assert.equal(out.messages.length, 1);
    assert.equal(out.messages[0].data.source, 'test');
    assert.equal(out.messages[0].data.titleUpper, 'CHAIR');
    assert.equal(typeof out.messages[0].data.at, 'number');
  }
});

test('refuses data that is not an object', async () => {
  assert.deepEqual(await call(plugin, new Message({ type: 'note', data: [1] })), {
    reject: { code: 'invalid_data', message: 'note needs an object as data' },
  });
});

test('a misspelt setting fails configure', () => {
  assert.throws(() => plugin.configure({ feild: 'x' }), /unknown key "feild"/);
});
