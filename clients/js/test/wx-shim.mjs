/**
 * wx-shim: a Node stand-in for the WeChat mini-program socket APIs, backed by
 * real WebSockets from the npm `ws` package, for end-to-end tests of the SDK
 * (and of the original mini-program client) against a real relay.
 *
 *   import { createWx } from './wx-shim.mjs';
 *   const wx = createWx({ containerUrl: () => 'ws://127.0.0.1:' + port });
 *   globalThis.wx = wx;            // optional: code that uses the global `wx`
 *
 * What it emulates (the SocketTask API as WeChat documents it):
 * - wx.connectSocket({url, header, protocols, success, fail, complete}) → SocketTask.
 *   The url must start with ws:// or wss:// (else `fail`, asynchronously, like WeChat).
 *   `success`/`complete` run once the task is created, not when it opens.
 * - SocketTask.onOpen(cb({header})), onMessage(cb({data})) with `data` a string for
 *   text frames and an ArrayBuffer for binary frames, onClose(cb({code, reason})),
 *   onError(cb({errMsg})), send({data, success, fail, complete}),
 *   close({code, reason, success, fail, complete}). Listeners are callbacks; every
 *   listener registered with an onX method is called. send() before open or after close
 *   calls `fail` with {errMsg} instead of throwing. close() accepts only code 1000 or
 *   3000–4999 (as WeChat does); another code calls `fail` and leaves the socket open.
 *   A connection that cannot be opened gives onError then onClose({code: 1006}).
 * - wx.cloud.init() and wx.cloud.connectContainer({config: {env}, service, path, header,
 *   success, fail}) → Promise<{socketTask}>. The path (with its query string, e.g.
 *   `/socket?v=1&token=…`) is appended to `containerUrl(env, service)`. Like the WeChat
 *   gateway, the request carries `X-WX-*` headers (see `gatewayHeaders`) and no Origin.
 * - wx.onAppShow/onAppHide/offAppShow/offAppHide, driven by the test through
 *   `wx.__shim.show()` / `wx.__shim.hide()`.
 * - Optional: the limit of concurrent socket tasks (`maxSockets`, off by default; WeChat
 *   allows 5), failing connectSocket with "exceed max task count".
 *
 * What it cannot emulate:
 * - The domain allow-list (request domains set in the mini-program console), TLS
 *   certificate checks and the wss:// requirement of release builds: any ws:// URL works.
 * - WeChat closing or freezing sockets a few seconds after the app goes to the
 *   background, and timers pausing there: hide() only fires the onAppHide listeners.
 * - The WeChat gateway itself (Cloud Hosting auth, real X-WX-OPENID values, its own
 *   timeouts and frame size limits), and per-platform differences (iOS/Android/devtools),
 *   e.g. a missing close `code` on some devices or protocol-ping handling.
 * - Per-platform quirks of the message payload (WeChat never delivers Blob; neither does
 *   this shim), and the legacy global wx.onSocketOpen/onSocketMessage API (not provided).
 */
import WebSocket from 'ws';

const noop = () => {};

function callbacks(opts, ok, result) {
  const o = opts || {};
  if (ok) {
    if (typeof o.success === 'function') o.success(result);
  } else if (typeof o.fail === 'function') {
    o.fail(result);
  }
  if (typeof o.complete === 'function') o.complete(result);
}

function toArrayBuffer(buf) {
  return buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength);
}

class SocketTask {
  constructor(shim, url, { header, protocols }) {
    this._shim = shim;
    this._listeners = { open: [], message: [], close: [], error: [] };
    this._closed = false;
    this._ws = new WebSocket(url, protocols && protocols.length ? protocols : undefined, {
      headers: header || {},
      perMessageDeflate: false,
    });
    shim.open.add(this);
    this._ws.on('upgrade', (res) => {
      this._header = res.headers;
    });
    this._ws.on('open', () => this._emit('open', { header: this._header || {} }));
    this._ws.on('message', (data, isBinary) => {
      this._emit('message', { data: isBinary ? toArrayBuffer(data) : data.toString('utf8') });
    });
    this._ws.on('error', (err) => this._emit('error', { errMsg: `${err && err.message ? err.message : err}` }));
    this._ws.on('close', (code, reason) => {
      this._closed = true;
      shim.open.delete(this);
      this._emit('close', { code, reason: reason ? reason.toString('utf8') : '' });
    });
  }

  _emit(kind, payload) {
    for (const cb of this._listeners[kind].slice()) cb(payload);
  }

  onOpen(cb) {
    this._listeners.open.push(cb);
  }
  onMessage(cb) {
    this._listeners.message.push(cb);
  }
  onClose(cb) {
    this._listeners.close.push(cb);
  }
  onError(cb) {
    this._listeners.error.push(cb);
  }

  send(opts) {
    const o = opts || {};
    if (this._ws.readyState !== WebSocket.OPEN) {
      setImmediate(() => callbacks(o, false, { errMsg: 'sendSocketMessage:fail WebSocket is not connected' }));
      return;
    }
    const data = o.data instanceof ArrayBuffer ? Buffer.from(o.data) : o.data;
    this._ws.send(data, (err) =>
      callbacks(o, !err, err ? { errMsg: `sendSocketMessage:fail ${err.message}` } : { errMsg: 'sendSocketMessage:ok' }),
    );
  }

  close(opts) {
    const o = opts || {};
    const code = o.code === undefined ? 1000 : o.code;
    if (!(code === 1000 || (code >= 3000 && code <= 4999))) {
      setImmediate(() =>
        callbacks(o, false, {
          errMsg: `closeSocket:fail The code must be either 1000, or between 3000 and 4999. ${code} is neither.`,
        }),
      );
      return;
    }
    if (this._ws.readyState === WebSocket.CONNECTING) {
      // `ws` refuses close() before the handshake; WeChat just gives up on the connection.
      this._ws.terminate();
    } else if (this._ws.readyState === WebSocket.OPEN) {
      this._ws.close(code, o.reason || '');
    }
    setImmediate(() => callbacks(o, true, { errMsg: 'closeSocket:ok' }));
  }
}

/**
 * Creates a fresh `wx` object.
 * @param {object} [options]
 * @param {(env: string, service: string) => string} [options.containerUrl] base ws:// URL for connectContainer
 * @param {(env: string, service: string) => Record<string,string>} [options.gatewayHeaders] X-WX-* headers for connectContainer
 * @param {number} [options.maxSockets] concurrent SocketTask limit (WeChat: 5); default unlimited
 */
export function createWx(options = {}) {
  const showCbs = new Set();
  const hideCbs = new Set();
  const shim = {
    open: new Set(),
    maxSockets: options.maxSockets || Infinity,
    /** Fires wx.onAppShow listeners. */
    show(res = { scene: 1001 }) {
      for (const cb of [...showCbs]) cb(res);
    },
    /** Fires wx.onAppHide listeners (sockets stay open: see the header). */
    hide() {
      for (const cb of [...hideCbs]) cb({});
    },
    /** Terminates every socket this wx opened (test cleanup). */
    closeAll() {
      for (const t of [...shim.open]) t._ws.terminate();
    },
  };

  function connect(url, opts, api) {
    if (typeof url !== 'string' || !/^wss?:\/\//.test(url)) {
      const err = { errMsg: `${api}:fail invalid url "${url}"` };
      setImmediate(() => callbacks(opts, false, err));
      return null;
    }
    if (shim.open.size >= shim.maxSockets) {
      const err = { errMsg: `${api}:fail exceed max task count` };
      setImmediate(() => callbacks(opts, false, err));
      return null;
    }
    const task = new SocketTask(shim, url, opts);
    setImmediate(() => callbacks(opts, true, { errMsg: `${api}:ok` }));
    return task;
  }

  const containerUrl =
    options.containerUrl ||
    (() => {
      throw new Error('wx-shim: pass options.containerUrl to use wx.cloud.connectContainer');
    });
  const gatewayHeaders =
    options.gatewayHeaders ||
    ((env, service) => ({ 'X-WX-ENV': env, 'X-WX-SERVICE': service, 'X-WX-SOURCE': 'wx-shim' }));

  const wx = {
    __shim: shim,
    connectSocket(opts = {}) {
      return connect(opts.url, opts, 'connectSocket');
    },
    cloud: {
      init: noop,
      connectContainer(opts = {}) {
        const env = opts.config && opts.config.env;
        const path = opts.path || '/';
        return new Promise((resolve, reject) => {
          let base;
          try {
            base = containerUrl(env, opts.service);
          } catch (e) {
            const err = { errMsg: `connectContainer:fail ${e.message}` };
            callbacks(opts, false, err);
            reject(err);
            return;
          }
          const header = { ...gatewayHeaders(env, opts.service), ...(opts.header || {}) };
          const url = base.replace(/\/$/, '') + (path.startsWith('/') ? path : '/' + path);
          let failure = null;
          const task = connect(url, { header, protocols: opts.protocols, fail: (e) => (failure = e) }, 'connectContainer');
          if (!task) {
            setImmediate(() => {
              callbacks(opts, false, failure);
              reject(failure);
            });
            return;
          }
          const result = { socketTask: task, errMsg: 'connectContainer:ok' };
          callbacks(opts, true, result);
          resolve(result);
        });
      },
    },
    onAppShow: (cb) => showCbs.add(cb),
    onAppHide: (cb) => hideCbs.add(cb),
    offAppShow: (cb) => showCbs.delete(cb),
    offAppHide: (cb) => hideCbs.delete(cb),
  };
  return wx;
}

export default createWx;
