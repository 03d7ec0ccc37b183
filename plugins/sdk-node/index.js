// @pairrelay/plugin-sdk: write a relay message plugin in Node.js as one
// object and a call to serve(), as a Go plugin is one type and sdk.Serve.
//
//   const { serve, reject } = require('@pairrelay/plugin-sdk');
//   serve({
//     configure(config) { ... },            // the route entry's config; throw to refuse it
//     async handle(msg) { return msg; },    // pass it on (changed or not)
//   });
//
// What handle returns decides the message's fate, as in the Go SDK:
//   - a message (the one it got, changed or not): it goes on;
//   - an array of messages: fan-out; [] (or null) drops it, silently;
//   - reject(code, message), returned or thrown: refused on purpose, the
//     sender gets relay.error with that code and message;
//   - any other thrown error (or rejected promise): a failure, which the
//     route's on_error turns into a reject, a pass or a drop; its text goes
//     to relay's log only;
//   - undefined (a forgotten return) is a failure too, never a silent drop.
//
// This file also is the reference of the protocol for other languages:
// relay starts the plugin through hashicorp/go-plugin, which
//   1. checks a magic cookie, so that the plugin refuses to run by hand;
//   2. serves relayplugin.v1.Plugin, grpc.health.v1.Health ("plugin"
//      SERVING) and go-plugin's GRPCController (Shutdown) on 127.0.0.1;
//   3. prints the handshake line 1|1|tcp|127.0.0.1:PORT|grpc to stdout.
// Log with console.error: stderr lands in relay's log with the plugin's name.
'use strict';

const path = require('node:path');

const COOKIE_KEY = 'RELAY_PLUGIN_COOKIE';
const COOKIE_VALUE = 'relay-message-plugin-v1';
const CORE_PROTOCOL = 1; // go-plugin's own protocol version
const APP_PROTOCOL = 1; // relayplugin.v1

/** A refusal on purpose: the sender gets relay.error with code and message. */
class Rejection extends Error {
  constructor(code, message) {
    super(message || code);
    this.name = 'Rejection';
    this.code = code;
  }
}

/** reject(code, message): return or throw it to refuse a message (or, in authenticate, a connection). */
function reject(code, message) {
  return new Rejection(code, message);
}

const RAW = Symbol('raw data');

/**
 * A message as handle() gets it: type, data (the JSON value; undefined when
 * the message has none), to (an array of envs, or null: every other env),
 * id, from, ts (ms) and claims (the sender's identity, or null). Data that
 * is never read goes back byte for byte; data read (and perhaps changed in
 * place) or assigned is sent as JSON.stringify of its value.
 */
class Message {
  constructor(fields = {}) {
    this.type = fields.type || '';
    this.to = fields.to === undefined ? null : fields.to;
    this.id = fields.id || '';
    this.from = fields.from || '';
    this.ts = fields.ts || 0;
    this.claims = fields.claims === undefined ? null : fields.claims;
    this[RAW] = { bytes: null, parsed: false, value: undefined };
    if ('data' in fields) this.data = fields.data;
  }

  get data() {
    const raw = this[RAW];
    if (!raw.parsed) {
      raw.parsed = true;
      raw.value = raw.bytes && raw.bytes.length > 0 ? JSON.parse(raw.bytes.toString('utf8')) : undefined;
    }
    return raw.value;
  }

  set data(value) {
    this[RAW] = { bytes: null, parsed: true, value };
  }

  /** The data's JSON text as relay sent it (a Buffer), or null once data was read or set. */
  get rawData() {
    const raw = this[RAW];
    return raw.parsed ? null : raw.bytes;
  }

  toJSON() {
    const out = { type: this.type, from: this.from, id: this.id, ts: this.ts, to: this.to };
    const data = this.data;
    if (data !== undefined) out.data = data;
    if (this.claims) out.claims = this.claims;
    return out;
  }
}

function fromProto(pm) {
  const m = new Message({
    type: pm.type,
    to: pm.has_to ? pm.to.slice() : null,
    id: pm.id,
    from: pm.from,
    ts: Number(pm.ts || 0),
    claims: pm.claims && pm.claims.length > 0 ? JSON.parse(pm.claims.toString('utf8')) : null,
  });
  m[RAW] = { bytes: pm.data && pm.data.length > 0 ? Buffer.from(pm.data) : null, parsed: false, value: undefined };
  return m;
}

function toProto(m) {
  if (!(m instanceof Message)) m = new Message(m);
  const raw = m[RAW];
  let data;
  if (!raw.parsed) {
    data = raw.bytes || Buffer.alloc(0);
  } else if (raw.value === undefined) {
    data = Buffer.alloc(0);
  } else {
    data = Buffer.from(JSON.stringify(raw.value), 'utf8');
  }
  const to = Array.isArray(m.to) ? m.to.map(String) : [];
  return {
    type: String(m.type),
    data,
    to,
    has_to: Array.isArray(m.to),
    id: m.id || '',
    from: m.from || '',
    ts: String(m.ts || 0),
    claims: m.claims ? Buffer.from(JSON.stringify(m.claims)) : Buffer.alloc(0),
  };
}

function errorText(err) {
  return err && err.message ? err.message : String(err);
}

/**
 * call runs plugin.handle on one message the way relay's call does (the same
 * conversions and rules) and returns what relay would get: {messages},
 * {drop}, {reject: {code, message}} or {error: {message}}. Use it in tests.
 */
async function call(plugin, msg, ctx = {}) {
  const pm = toProto(msg instanceof Message ? msg : new Message(msg));
  const res = await handleProto(plugin, pm, { timeoutMs: ctx.timeoutMs || 0, signal: ctx.signal || new AbortController().signal });
  if (res.messages) return { messages: res.messages.messages.map(fromProto) };
  return res;
}

async function handleProto(plugin, pm, ctx) {
  let out;
  try {
    out = await plugin.handle(fromProto(pm), ctx);
  } catch (err) {
    if (err instanceof Rejection) return { reject: { code: err.code, message: err.message } };
    return { error: { message: errorText(err) } };
  }
  if (out instanceof Rejection) return { reject: { code: out.code, message: out.message } };
  if (out === undefined) {
    return { error: { message: 'handle returned nothing: return the message to pass it on, [] or null to drop it' } };
  }
  if (out === null) return { drop: {} };
  const list = Array.isArray(out) ? out : [out];
  if (list.length === 0) return { drop: {} };
  try {
    return { messages: { messages: list.map(toProto) } };
  } catch (err) {
    return { error: { message: `handle returned a message that cannot be sent: ${errorText(err)}` } };
  }
}

/**
 * decodeConfig(config, defaults) checks a route entry's config against
 * defaults (an object of every key with its default value) and returns the
 * settings: an unknown key, or a value of another type than its default's,
 * throws, so that relay check reports the mistake.
 */
function decodeConfig(config, defaults) {
  const out = { ...defaults };
  for (const key of Object.keys(config || {})) {
    if (!(key in defaults)) {
      throw new Error(`config: unknown key ${JSON.stringify(key)} (known: ${Object.keys(defaults).join(', ') || 'none'})`);
    }
    const want = Array.isArray(defaults[key]) ? 'array' : typeof defaults[key];
    const got = Array.isArray(config[key]) ? 'array' : typeof config[key];
    if (defaults[key] !== null && want !== got) throw new Error(`config: ${key} must be of type ${want}, got ${got}`);
    out[key] = config[key];
  }
  return out;
}

function loadProtos(grpc, protoLoader) {
  const load = (file) =>
    grpc.loadPackageDefinition(
      protoLoader.loadSync(path.join(__dirname, 'proto', file), {
        keepCase: true,
        longs: String,
        enums: String,
        defaults: true,
        oneofs: true,
      }),
    );
  return {
    relay: load('relayplugin/v1/plugin.proto').relayplugin.v1,
    health: load('grpc/health/v1/health.proto').grpc.health.v1,
    controller: load('plugin/grpc_controller.proto').plugin,
  };
}

function identityToProto(id) {
  if (!id || typeof id.key !== 'string' || id.key === '') throw new Error('authenticate returned no identity key');
  return {
    key: id.key,
    envs: Array.isArray(id.envs) ? id.envs : [],
    has_envs: Array.isArray(id.envs),
    expires_at: String(id.expiresAt || 0),
    claims: id.claims ? Buffer.from(JSON.stringify(id.claims)) : Buffer.alloc(0),
  };
}

/**
 * serve(plugin) runs the plugin under relay: plugin.handle(msg, ctx) is
 * required; plugin.configure(config), plugin.authenticate(req) (for auth
 * provider plugin: return {key, envs?, expiresAt?, claims?}, or return or
 * throw reject('unauthorized' | 'token_expired', message)) and plugin.name,
 * plugin.summary, plugin.fields (for Describe) are optional.
 */
function serve(plugin) {
  if (!plugin || typeof plugin.handle !== 'function') throw new TypeError('serve: the plugin needs a handle(msg) function');
  if (process.env[COOKIE_KEY] !== COOKIE_VALUE) {
    console.error('This is a relay plugin: relay starts it (see plugins: in relay.yaml).');
    process.exit(1);
  }
  const grpc = require('@grpc/grpc-js');
  const protoLoader = require('@grpc/proto-loader');
  const { relay, health, controller } = loadProtos(grpc, protoLoader);

  // relay may send a message larger than gRPC's default limit of 4 MiB (it
  // bounds them itself): accept any size, or a large one ends the stream.
  const server = new grpc.Server({ 'grpc.max_receive_message_length': -1 });
  server.addService(relay.Plugin.service, {
    Configure(req, callback) {
      Promise.resolve()
        .then(() => {
          const text = req.request.config.toString('utf8').trim();
          if (plugin.configure) return plugin.configure(text === '' ? {} : JSON.parse(text));
          if (text !== '' && text !== '{}') throw new Error('config: this plugin takes no settings');
        })
        .then(
          () => callback(null, { error: '' }),
          (err) => callback(null, { error: errorText(err) }),
        );
    },
    Describe(_req, callback) {
      callback(null, { name: plugin.name || '', summary: plugin.summary || '', fields: plugin.fields || [] });
    },
    Authenticate(req, callback) {
      if (typeof plugin.authenticate !== 'function') {
        callback({ code: grpc.status.UNIMPLEMENTED, details: 'this plugin does not authenticate' });
        return;
      }
      Promise.resolve()
        .then(() => plugin.authenticate(req.request))
        .then(
          (res) => {
            if (res instanceof Rejection) return { refuse: { code: res.code, message: res.message } };
            return { identity: identityToProto(res) };
          },
          (err) =>
            err instanceof Rejection
              ? { refuse: { code: err.code, message: err.message } }
              : { error: { message: errorText(err) } },
        )
        .then(
          (res) => callback(null, res),
          (err) => callback(null, { error: { message: errorText(err) } }),
        );
    },
    // One stream carries every message; each request has a call_id (a
    // string here: uint64) that its answer repeats. Answers go in any order.
    Handle(stream) {
      const inflight = new Map();
      stream.on('data', (req) => {
        if (req.cancel) {
          const ac = inflight.get(req.call_id);
          if (ac) ac.abort();
          return;
        }
        const ac = new AbortController();
        inflight.set(req.call_id, ac);
        const timeoutMs = Number(req.timeout_ms || 0);
        handleProto(plugin, req.message, { timeoutMs, signal: ac.signal }).then((res) => {
          inflight.delete(req.call_id);
          if (!ac.signal.aborted) stream.write({ call_id: req.call_id, ...res });
        });
      });
      stream.on('end', () => stream.end());
      stream.on('error', () => {});
    },
  });
  server.addService(health.Health.service, {
    Check(req, callback) {
      const service = req.request.service;
      if (service === '' || service === 'plugin') callback(null, { status: 'SERVING' });
      else callback({ code: grpc.status.NOT_FOUND, details: `unknown service ${service}` });
    },
    Watch(stream) {
      stream.write({ status: 'SERVING' });
    },
  });
  server.addService(controller.GRPCController.service, {
    Shutdown(_req, callback) {
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
  return server;
}

module.exports = { serve, reject, call, decodeConfig, Message, Rejection, COOKIE_KEY, COOKIE_VALUE, APP_PROTOCOL };
// The protocol's message conversions, for the SDK's own tests.
module.exports._wire = { fromProto, toProto };
