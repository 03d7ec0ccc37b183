// A relay message plugin in Node.js. relay starts it (plugins: in
// relay.yaml) through hashicorp/go-plugin's protocol:
//
//   1. check the magic cookie, so that it refuses to run when started by hand;
//   2. serve relayplugin.v1.Plugin, grpc.health.v1.Health ("plugin" SERVING)
//      and go-plugin's GRPCController (Shutdown) on 127.0.0.1;
//   3. print the handshake line 1|1|tcp|127.0.0.1:PORT|grpc to stdout.
//
// Log with console.error: stderr lands in relay's log with the plugin's
// name. stdout after the handshake line is discarded.
'use strict';

const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const COOKIE_KEY = 'RELAY_PLUGIN_COOKIE';
const COOKIE_VALUE = 'relay-message-plugin-v1';
const CORE_PROTOCOL = 1; // go-plugin's own protocol version
const APP_PROTOCOL = 1; // relayplugin.v1

// ---- The plugin's logic -------------------------------------------------

let settings = { field: 'enrichedAt', source: 'node', api_keys: '' };

// configure receives the route entry's config (an object).
function configure(config) {
  for (const key of Object.keys(config)) {
    if (!(key in settings)) throw new Error(`config: unknown key ${JSON.stringify(key)} (known: ${Object.keys(settings).join(', ')})`);
    if (typeof config[key] !== 'string') throw new Error(`config: ${key} must be a string`);
  }
  settings = { ...settings, ...config };
}

// handle returns the message's fate: { messages: [...] } to pass (one),
// fan out (several) or drop (none); { reject: { code, message } } to refuse
// it; a thrown error or rejected promise is a failure (route's on_error).
async function handle(msg) {
  if (msg.type !== 'addMaterial') return { messages: [msg] };
  let data;
  try {
    data = JSON.parse(msg.data.toString('utf8'));
  } catch {
    return { reject: { code: 'invalid_data', message: 'addMaterial needs JSON data' } };
  }
  if (data === null || typeof data !== 'object' || Array.isArray(data)) {
    return { reject: { code: 'invalid_data', message: 'addMaterial needs an object as data' } };
  }
  data[settings.field] = Date.now();
  data.source = settings.source;
  if (typeof data.title === 'string') data.titleUpper = data.title.toUpperCase();
  return { messages: [{ ...msg, data: Buffer.from(JSON.stringify(data)) }] };
}

// authenticate decides on a connection when relay uses this plugin as its
// auth provider (auth: {provider: plugin, plugin: {name: node-enricher,
// config: {api_keys: "KEY=PAIR,…"}}}). A real one would look the credential
// up in a session store. Return { identity: {key, envs?, expires_at?,
// claims?} } to admit, { refuse: {code?, message} } to refuse; a thrown
// error or rejected promise is a failure (refused; the message goes to
// relay's log only). Never put the credential in a message or a log line.
async function authenticate(req) {
  for (const entry of settings.api_keys.split(',')) {
    const [key, pair] = entry.split('=');
    if (key && pair && key === req.credential) {
      return {
        identity: {
          key: pair,
          envs: [], has_envs: false, // any env
          expires_at: String(Date.now() + 3600 * 1000), // ms; the session ends (4501) unless refreshed
          claims: Buffer.from(JSON.stringify({ source: settings.source, env: req.env })),
        },
      };
    }
  }
  return { refuse: { code: 'unauthorized', message: 'unknown API key' } };
}

// ---- The protocol -------------------------------------------------------

if (process.env[COOKIE_KEY] !== COOKIE_VALUE) {
  console.error('This is a relay plugin: relay starts it (see plugins: in relay.yaml).');
  process.exit(1);
}

function load(file) {
  const def = protoLoader.loadSync(path.join(__dirname, 'proto', file), {
    keepCase: true, longs: String, enums: String, defaults: true, oneofs: true,
  });
  return grpc.loadPackageDefinition(def);
}
const relay = load('relayplugin/v1/plugin.proto').relayplugin.v1;
const health = load('grpc/health/v1/health.proto').grpc.health.v1;
const controller = load('plugin/grpc_controller.proto').plugin;

function answer(result) {
  if (result.reject) return { reject: result.reject };
  const messages = result.messages || [];
  return messages.length === 0 ? { drop: {} } : { messages: { messages } };
}

// relay may send a message larger than gRPC's default limit of 4 MiB (it
// bounds them itself): accept any size, or a large one ends the stream.
const server = new grpc.Server({ 'grpc.max_receive_message_length': -1 });

server.addService(relay.Plugin.service, {
  Configure(call, callback) {
    try {
      const text = call.request.config.toString('utf8').trim();
      configure(text === '' ? {} : JSON.parse(text));
      callback(null, { error: '' });
    } catch (err) {
      callback(null, { error: err.message || String(err) });
    }
  },
  Describe(_call, callback) {
    callback(null, {
      name: 'node-enricher',
      summary: 'Stamps addMaterial data with the time and a source.',
      fields: [
        { name: 'field', type: 'string', doc: 'Key that receives the time in ms.', default: 'enrichedAt' },
        { name: 'source', type: 'string', doc: 'Value of data.source.', default: 'node' },
        { name: 'api_keys', type: 'string', doc: 'For auth provider plugin: KEY=PAIR,… credentials and the pairing key each admits.' },
      ],
    });
  },
  Authenticate(call, callback) {
    Promise.resolve()
      .then(() => authenticate(call.request))
      .then(
        (res) => callback(null, res),
        (err) => callback(null, { error: { message: err && err.message ? err.message : String(err) } }),
      );
  },
  // One stream carries every message; each request has a call_id (a
  // string here: uint64) that its answer repeats. Answer in any order.
  Handle(call) {
    call.on('data', (req) => {
      if (req.cancel) return; // relay gave up on req.call_id
      Promise.resolve()
        .then(() => handle(req.message))
        .then(answer, (err) => ({ error: { message: err && err.message ? err.message : String(err) } }))
        .then((res) => call.write({ call_id: req.call_id, ...res }));
    });
    call.on('end', () => call.end());
    call.on('error', () => {});
  },
});

server.addService(health.Health.service, {
  Check(call, callback) {
    const service = call.request.service;
    if (service === '' || service === 'plugin') {
      callback(null, { status: 'SERVING' });
    } else {
      callback({ code: grpc.status.NOT_FOUND, details: `unknown service ${service}` });
    }
  },
  Watch(call) {
    call.write({ status: 'SERVING' });
  },
});

server.addService(controller.GRPCController.service, {
  Shutdown(_call, callback) {
    callback(null, {});
    setImmediate(() => server.tryShutdown(() => process.exit(0)));
    setTimeout(() => process.exit(0), 500).unref(); // streams still open: exit anyway
  },
});

server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) => {
  if (err) {
    console.error(`cannot listen: ${err.message}`);
    process.exit(1);
  }
  process.stdout.write(`${CORE_PROTOCOL}|${APP_PROTOCOL}|tcp|127.0.0.1:${port}|grpc\n`);
});
