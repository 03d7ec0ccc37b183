// Compiled by scripts/types-test.mjs against the types `relay types -lang ts`
// generates from relay.yaml here. Each @ts-expect-error line must fail to
// compile: if it compiled, tsc reports the directive as unused and the test fails.
import { createClient, type RelayMessage } from '@pairrelay/client';
import type { RelayMessages } from './relay-messages.js';

const client = createClient<RelayMessages>({ url: 'ws://127.0.0.1:1/socket', token: 't', env: 'h5' });

// Data that matches the schemas compiles.
void client.send('addMaterial', { id: 1, name: 'chair' });
void client.send('addMaterial', { id: 'm-1', name: 'desk', tags: ['a'], kind: 'table', size: { w: 2 } });
void client.send('ping', null);
void client.send('ping', { at: 5 });
void client.send('note', 'anything at all');
void client.send('material.moved', { any: 'data' });

// @ts-expect-error: a misspelt field (the schema has additionalProperties: false)
void client.send('addMaterial', { id: 1, nam: 'chair' });
// @ts-expect-error: name is required
void client.send('addMaterial', { id: 1 });
// @ts-expect-error: id is a string or an integer
void client.send('addMaterial', { id: true, name: 'chair' });
// @ts-expect-error: kind is chair or table
void client.send('addMaterial', { id: 1, name: 'chair', kind: 'sofa' });
// @ts-expect-error: size.w is required
void client.send('addMaterial', { id: 1, name: 'chair', size: { h: 1 } });
// @ts-expect-error: unmatched: reject, so a type no route matches is refused
void client.send('addMaterail', { id: 1, name: 'chair' });

// Handlers get the data typed.
client.on('addMaterial', (msg) => {
  const name: string = msg.data.name;
  const id: string | number = msg.data.id;
  // @ts-expect-error: no such field
  void msg.data.nam;
  void name;
  void id;
});
// relay's own frames keep their untyped data.
client.on('relay.hello', (msg) => void msg.data.peers);
client.on<{ peers: string[] }>('relay.hello', (msg: RelayMessage<{ peers: string[] }>) => void msg.data.peers);

// Without a map every type takes any data, as before.
const plain = createClient({ url: 'ws://127.0.0.1:1/socket', token: 't', env: 'miniapp' });
void plain.send('addMaterial', { whatever: true });
void plain.send('x');
plain.on('addMaterial', (msg) => void msg.data.whatever);
plain.on<{ n: number }>('count', (msg) => {
  const n: number = msg.data.n;
  void n;
});
