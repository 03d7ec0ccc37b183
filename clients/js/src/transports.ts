/**
 * Socket factories: how the client opens a WebSocket on each platform.
 *
 * The client only needs a tiny surface: send a text frame, close, and four
 * events. A `SocketFactory` opens one connection and wires the events; it may
 * return the socket directly or a Promise of it (WeChat Cloud Hosting, Taro).
 */

/** Events a socket factory reports to the client. Call them asynchronously, never from inside the factory call. */
export interface SocketEvents {
  onOpen(): void;
  /** A text frame arrived. */
  onMessage(data: string): void;
  /** The connection closed (or could not be opened: use 1006). */
  onClose(code: number, reason: string): void;
  onError(error: unknown): void;
}

/** The connection as the client uses it. */
export interface RelaySocket {
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

/** Options the client passes to every factory call. */
export interface SocketOptions {
  /** WebSocket subprotocols to request (none by default: `v=1` in the query selects the wire). */
  protocols?: string[];
  /**
   * Request headers (the credential as `Authorization: Bearer`, with `credential: 'header'`).
   * wx.connectSocket, wx.cloud.connectContainer and npm `ws` send them; a browser WebSocket cannot.
   */
  headers?: Record<string, string>;
}

/**
 * Opens one connection to `url` (for WeChat Cloud Hosting: the container path
 * with its query string) and reports its events.
 */
export type SocketFactory = (
  url: string,
  events: SocketEvents,
  options: SocketOptions,
) => RelaySocket | Promise<RelaySocket>;

/** The SocketTask shape shared by wx, uni-app, Taro, Alipay and friends. */
export interface SocketTaskLike {
  onOpen(callback: (res?: unknown) => void): void;
  onMessage(callback: (res: { data: unknown }) => void): void;
  onClose(callback: (res?: { code?: number; reason?: string }) => void): void;
  onError(callback: (err?: unknown) => void): void;
  send(options: { data: string; success?: (res?: unknown) => void; fail?: (err?: unknown) => void }): void;
  close(options: {
    code?: number;
    reason?: string;
    success?: (res?: unknown) => void;
    fail?: (err?: unknown) => void;
  }): void;
}

/**
 * A constructor with the browser WebSocket shape: the global one, or npm `ws` in
 * Node. Typed loosely so that the DOM's and `ws`'s own declarations both fit.
 */
export type WebSocketLikeConstructor = new (url: string, protocols?: any) => any;

/** The parts of a browser-style WebSocket the client uses. */
interface WebSocketLike {
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

/** Decodes a frame payload to text; binary frames are decoded as UTF-8 where TextDecoder exists. */
export function frameText(data: unknown): string | undefined {
  if (typeof data === 'string') return data;
  if (data != null && typeof TextDecoder !== 'undefined') {
    try {
      if (data instanceof ArrayBuffer || ArrayBuffer.isView(data)) {
        return new TextDecoder().decode(data);
      }
    } catch {
      return undefined;
    }
  }
  return undefined;
}

function noop(): void {}

/** Wires a SocketTask (wx / uni / Taro shape) to the client's events. */
export function adaptSocketTask(task: SocketTaskLike, events: SocketEvents): RelaySocket {
  task.onOpen(() => events.onOpen());
  task.onMessage((res) => {
    const text = frameText(res && res.data);
    if (text !== undefined) events.onMessage(text);
    else events.onError(new Error('relay: ignored a non-text frame'));
  });
  task.onClose((res) => {
    const code = res && typeof res.code === 'number' ? res.code : 1006;
    const reason = res && typeof res.reason === 'string' ? res.reason : '';
    events.onClose(code, reason);
  });
  task.onError((err) => events.onError(err));
  return {
    send(data: string) {
      task.send({ data, fail: (err) => events.onError(err) });
    },
    close(code?: number, reason?: string) {
      const opts: { code?: number; reason?: string; fail: () => void } = { fail: noop };
      if (code !== undefined) opts.code = code;
      if (reason !== undefined) opts.reason = reason;
      task.close(opts);
    },
  };
}

/**
 * A factory for any `connectSocket`-style API that returns a SocketTask (or a
 * Promise of one). For uni-app and Taro:
 *
 *     socketTaskFactory((url) => uni.connectSocket({ url, complete() {} }))
 *     socketTaskFactory((url) => Taro.connectSocket({ url }))
 *
 * With `credential: 'header'`, pass the headers on: `(url, protocols, header) => uni.connectSocket({ url, header, … })`.
 */
export function socketTaskFactory(
  connect: (
    url: string,
    protocols?: string[],
    headers?: Record<string, string>,
  ) => SocketTaskLike | Promise<SocketTaskLike>,
): SocketFactory {
  return (url, events, options) => {
    const task = connect(url, options.protocols, options.headers);
    if (task && typeof (task as Promise<SocketTaskLike>).then === 'function') {
      return (task as Promise<SocketTaskLike>).then((t) => adaptSocketTask(t, events));
    }
    return adaptSocketTask(task as SocketTaskLike, events);
  };
}

/** A factory for browser-style WebSockets: the global `WebSocket` by default, or any compatible class (npm `ws`). */
export function webSocketFactory(impl?: WebSocketLikeConstructor): SocketFactory {
  return (url, events, options) => {
    const Ctor: WebSocketLikeConstructor | undefined =
      impl || (typeof WebSocket !== 'undefined' ? (WebSocket as WebSocketLikeConstructor) : undefined);
    if (!Ctor) throw new Error('relay: no WebSocket implementation; pass one to webSocketFactory() or set options.socket');
    const protocols = options.protocols && options.protocols.length ? options.protocols : undefined;
    let ws: WebSocketLike;
    if (options.headers) {
      // npm ws takes headers as a third argument; a browser WebSocket has no way to send them.
      if (!impl) throw new Error("relay: a browser WebSocket cannot send headers; use credential: 'subprotocol'");
      ws = new (Ctor as new (u: string, p: unknown, o: unknown) => WebSocketLike)(url, protocols, { headers: options.headers });
    } else ws = protocols ? new Ctor(url, protocols) : new Ctor(url);
    ws.onopen = () => events.onOpen();
    ws.onmessage = (ev) => {
      const text = frameText(ev.data);
      if (text !== undefined) events.onMessage(text);
      else events.onError(new Error('relay: ignored a non-text frame'));
    };
    ws.onclose = (ev) => events.onClose(typeof ev.code === 'number' ? ev.code : 1006, ev.reason || '');
    ws.onerror = (ev) => events.onError(ev);
    return {
      send: (data) => ws.send(data),
      close: (code, reason) => ws.close(code, reason),
    };
  };
}

/** The subset of the `wx` object the WeChat factories use. */
export interface WxLike {
  connectSocket(options: {
    url: string;
    protocols?: string[];
    header?: Record<string, string>;
    fail?: (err?: unknown) => void;
  }): SocketTaskLike;
  cloud?: {
    connectContainer?(options: {
      config: { env: string };
      service: string;
      path: string;
      protocols?: string[];
      header?: Record<string, string>;
    }): Promise<{ socketTask: SocketTaskLike }>;
  };
  onAppShow?(cb: () => void): void;
  onAppHide?(cb: () => void): void;
  offAppShow?(cb: () => void): void;
  offAppHide?(cb: () => void): void;
}

function globalWx(): WxLike | undefined {
  return typeof wx !== 'undefined' && wx ? (wx as WxLike) : undefined;
}

function errText(err: unknown): string {
  if (err && typeof err === 'object' && typeof (err as { errMsg?: unknown }).errMsg === 'string') {
    return (err as { errMsg: string }).errMsg;
  }
  return String(err);
}

/** A factory for WeChat mini programs: `wx.connectSocket` (the global `wx` unless one is given). */
export function wxSocketFactory(api?: WxLike): SocketFactory {
  return (url, events, options) => {
    const w = api || globalWx();
    if (!w) throw new Error('relay: wx is not available');
    let failed = false;
    const req: { url: string; protocols?: string[]; header?: Record<string, string>; fail: (err?: unknown) => void } = {
      url,
      // wx.connectSocket can fail before a task exists (domain not allowed, too many sockets):
      // report it as a dropped connection so the client backs off and retries.
      fail: (err) => {
        if (failed) return;
        failed = true;
        events.onError(err);
        events.onClose(1006, errText(err));
      },
    };
    if (options.protocols && options.protocols.length) req.protocols = options.protocols;
    if (options.headers) req.header = options.headers;
    return adaptSocketTask(w.connectSocket(req), events);
  };
}

/** Where a WeChat Cloud Hosting container is. */
export interface ContainerTarget {
  /** Cloud environment id (`config.env` of wx.cloud.connectContainer), not the relay env name. */
  env: string;
  /** Cloud Hosting service name. */
  service: string;
  /** WebSocket path on the service; default `/socket`. */
  path?: string;
}

/**
 * A factory for WeChat Cloud Hosting: `wx.cloud.connectContainer`. The client
 * passes the container path with the query string (`/socket?v=1&token=…`) as `url`.
 */
export function wxContainerFactory(target: { env: string; service: string }, api?: WxLike): SocketFactory {
  return (path, events, options) => {
    const w = api || globalWx();
    if (!w || !w.cloud || typeof w.cloud.connectContainer !== 'function') {
      throw new Error('relay: wx.cloud.connectContainer is not available (call wx.cloud.init first)');
    }
    const req: {
      config: { env: string };
      service: string;
      path: string;
      protocols?: string[];
      header?: Record<string, string>;
    } = {
      config: { env: target.env },
      service: target.service,
      path,
    };
    if (options.protocols && options.protocols.length) req.protocols = options.protocols;
    if (options.headers) req.header = options.headers;
    return Promise.resolve(w.cloud.connectContainer!(req)).then((res) => {
      if (!res || !res.socketTask) throw new Error('relay: connectContainer returned no socketTask');
      return adaptSocketTask(res.socketTask, events);
    });
  };
}

/** Picks the platform's factory: wx.connectSocket in mini programs, else the global WebSocket. */
export function defaultSocketFactory(): SocketFactory {
  const w = globalWx();
  if (w && typeof w.connectSocket === 'function') return wxSocketFactory(w);
  if (typeof WebSocket !== 'undefined') return webSocketFactory();
  throw new Error('relay: no WebSocket found; pass options.socket (webSocketFactory(WS), socketTaskFactory(...))');
}
