import { backoffDelay } from './backoff.js';
import { CloseCode, RelayError, isTerminalCloseCode, terminalErrorCode } from './errors.js';
import {
  type ContainerTarget,
  type RelaySocket,
  type SocketEvents,
  type SocketFactory,
  type SocketOptions,
  type WxLike,
  defaultSocketFactory,
  wxContainerFactory,
} from './transports.js';

/** Connection states. `closed` and `replaced` are final: the instance never reconnects. */
export type State = 'connecting' | 'open' | 'reconnecting' | 'closed' | 'replaced';

/** A frame as handlers receive it. Relay-assigned fields are absent on frames that have none. */
export interface RelayMessage<T = any> {
  type: string;
  data: T;
  /** The env that sent the message. */
  from?: string;
  /** Per-token sequence number assigned by the relay. */
  seq?: number;
  /** The sender's client message id, if it set one. */
  id?: string;
  /** Relay acceptance time, ms since epoch. */
  ts?: number;
}

/**
 * The data type of each message type, as a map from type to data. The default lets
 * every type carry any data; `relay types -lang ts` generates one from the `validate`
 * schemas of relay.yaml's routes, and `createClient<RelayMessages>(…)` then checks the
 * data of `send()` and `on()` at compile time.
 */
export interface AnyMessages {
  [type: string]: any;
}

/** Data of the frames of type K for handlers: relay's own frames (`relay.*`) are not in the map. */
export type DataOf<M, K extends string> = K extends `relay.${string}` ? any : K extends keyof M ? M[K] : any;

/** Data of the `relay.hello` frame. */
export interface HelloData {
  session?: string;
  env?: string;
  peers?: string[];
  seq?: number;
  resumed?: boolean;
  /** The relay's ping interval in ms. */
  heartbeat?: number;
  /** How fast this connection may send and how large a frame may be. */
  limits?: HelloLimits;
  [key: string]: unknown;
}

/** `relay.hello` `limits`: the client paces its sends to these. */
export interface HelloLimits {
  /** Sustained frames per second this connection may send; 0 = no limit. */
  messagesPerSecond?: number;
  /** Frames it may send at once above the rate. */
  burst?: number;
  /** Largest frame (bytes) it may send. */
  maxFrameBytes?: number;
}

/** Details that come with a state change. */
export interface StateDetail {
  /** The state before this change (equal to the new state when a further reconnect is scheduled). */
  prev: State;
  /** Close code that caused the change (reconnecting, closed, replaced). */
  code?: number;
  /** Close reason that caused the change. */
  reason?: string;
  /** For `reconnecting`: the number of this retry, from 1. */
  attempt?: number;
  /** For `reconnecting`: ms until the next connection attempt. */
  delay?: number;
}

/** Resolution value of `send()`: the seq the relay assigned. */
export interface SendResult {
  seq: number;
}

export interface SendOptions {
  /** Envs to deliver to (default: every other env of the token, or the route's choice). */
  to?: string | string[];
}

/** Hooks for app foreground/background (default: wx.onAppShow / wx.onAppHide when they exist). */
export interface AppLifecycle {
  onShow(callback: () => void): void;
  onHide(callback: () => void): void;
  offShow?(callback: () => void): void;
  offHide?(callback: () => void): void;
}

export interface ClientOptions {
  /** Relay WebSocket URL, e.g. `wss://relay.example.com/socket`. Either `url` or `container`. */
  url?: string;
  /** WeChat Cloud Hosting target for `wx.cloud.connectContainer`. Either `url` or `container`. */
  container?: ContainerTarget;
  /**
   * The pairing token (relay without auth), or a credential such as a JWT (relay with an auth
   * provider). A function is called for a fresh credential before every connection and when the
   * relay warns that the current one expires (`token_expired`), which the client answers with
   * `relay.refresh` by itself; it may return a Promise.
   */
  token: string | TokenSource;
  /**
   * How the credential travels: `query` (`?token=`, what relay without auth needs), `subprotocol`
   * (`relay.auth.<base64url>` beside `relay.v1`: in no URL, and the one way a browser has besides the
   * query), or `header` (`Authorization: Bearer`, for `wx.connectSocket`, `wx.cloud.connectContainer`
   * and npm `ws`; not browsers). Default: `query` for a string token, `subprotocol` for a function.
   */
  credential?: CredentialTransport;
  /** This side's env name (`h5`, `miniapp`, …). */
  env: string;
  /** Socket factory. Default: `wx.connectSocket` in mini programs, `wx.cloud.connectContainer` with `container`, else the global WebSocket. */
  socket?: SocketFactory;
  /** WebSocket subprotocols to request. Default none (`v=1` in the query selects the wire). */
  protocols?: string[];
  /** Resume cursor for the first connection (e.g. a persisted `client.lastSeq`). Default: none, live only. */
  since?: number;
  /** Backoff base in ms. Default 500. */
  backoffBase?: number;
  /** Backoff cap in ms. Default 30000. */
  backoffCap?: number;
  /** A connection that stays up this long (ms) after `relay.hello` resets the backoff. Default 5000. */
  stableAfter?: number;
  /** Interval of `relay.ping` frames in ms; 0 disables the heartbeat. Default: `heartbeat` of `relay.hello` (at least 5000), 20000 until the first one. */
  heartbeatInterval?: number;
  /** Longest silence (no frame at all) in ms before the connection counts as dead. Default heartbeatInterval + 10000. */
  heartbeatTimeout?: number;
  /** Longest wait in ms for a connection to open. Default 15000. */
  connectTimeout?: number;
  /** Most unacknowledged sends kept for resending. Default 1000; the oldest is rejected on overflow. */
  maxQueue?: number;
  /** Largest frame (UTF-8 bytes) `send()` accepts; 0 disables the check. Default: `limits.maxFrameBytes` of `relay.hello`, 65536 (the relay's default) until the first one. */
  maxFrameBytes?: number;
  /** Foreground/background hooks; `false` disables. Default: wx.onAppShow/onAppHide when present. */
  lifecycle?: AppLifecycle | false;
  /** Random source in [0,1) for jitter and ids. Default Math.random. */
  random?: () => number;
}

/** Returns a credential for the next connection or refresh. */
export type TokenSource = () => string | Promise<string>;

/** Where the client puts its credential; see `ClientOptions.credential`. */
export type CredentialTransport = 'query' | 'subprotocol' | 'header';

type Handler = (msg: RelayMessage) => void;
type StateHandler = (state: State, detail: StateDetail) => void;
type ErrorHandler = (err: RelayError) => void;
type ResyncHandler = (hello: HelloData) => void;

interface Pending {
  id: string;
  /** Send order (the n of the id): a message retried after rate_limited goes back to its place. */
  n: number;
  frame: string;
  size: number;
  resolve: (r: SendResult) => void;
  reject: (e: RelayError) => void;
}

interface Attempt {
  socket?: RelaySocket;
  dead: boolean;
  opened: boolean;
  /** relay.hello arrived: frames may be sent. */
  ready?: boolean;
}

const PING = '{"type":"relay.ping"}';
/** Pace to this share of the relay's announced rate, with a bucket of burst − 5% (at least 1)… */
const RATE_SHARE = 0.9;
/** …and never ping more often than this, whatever relay.hello says (ms). */
const MIN_HEARTBEAT = 5000;

const registry = new Map<string, RelayClient>();

function clientKey(o: ClientOptions): string {
  const where = o.container
    ? `wxcloud://${o.container.env}/${o.container.service}${o.container.path || '/socket'}`
    : String(o.url);
  return `${where}\n${tokenKey(o.token)}\n${o.env}`;
}

// A token function names its client by identity: the same function (and url and env) gives the same client.
const sourceIds = new WeakMap<TokenSource, number>();
let sourceCount = 0;
function tokenKey(token: string | TokenSource): string {
  if (typeof token === 'string') return 'token:' + token;
  let id = sourceIds.get(token);
  if (id === undefined) sourceIds.set(token, (id = ++sourceCount));
  return 'source:' + id;
}

/** base64url (no padding) of the UTF-8 bytes of s, without btoa or Buffer (mini programs have neither). */
export function base64url(s: string): string {
  const bytes: number[] = [];
  for (let i = 0; i < s.length; i++) {
    let c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
        i++;
      }
    }
    if (c < 0x80) bytes.push(c);
    else if (c < 0x800) bytes.push(0xc0 | (c >> 6), 0x80 | (c & 63));
    else if (c < 0x10000) bytes.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    else bytes.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
  }
  const abc = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
  let out = '';
  for (let i = 0; i < bytes.length; i += 3) {
    const n = (bytes[i] << 16) | ((bytes[i + 1] || 0) << 8) | (bytes[i + 2] || 0);
    out += abc[(n >> 18) & 63] + abc[(n >> 12) & 63];
    if (i + 1 < bytes.length) out += abc[(n >> 6) & 63];
    if (i + 2 < bytes.length) out += abc[n & 63];
  }
  return out;
}

/**
 * Returns the client for `url|container` + `token` + `env`, creating and
 * connecting it on first use. Repeat calls return the same instance (their
 * other options are ignored) until it is closed or replaced.
 */
export function createClient<M extends object = AnyMessages>(options: ClientOptions): RelayClient<M> {
  if (!options || (!options.url && !options.container)) {
    throw new TypeError('relay: createClient needs `url` or `container`');
  }
  if ((typeof options.token !== 'string' || !options.token) && typeof options.token !== 'function') {
    throw new TypeError('relay: `token` is required (a string, or a function returning one)');
  }
  const how = options.credential;
  if (how !== undefined && how !== 'query' && how !== 'subprotocol' && how !== 'header') {
    throw new TypeError("relay: `credential` must be 'query', 'subprotocol' or 'header'");
  }
  if (typeof options.env !== 'string' || !options.env) throw new TypeError('relay: `env` is required');
  const key = clientKey(options);
  let client = registry.get(key);
  if (!client) {
    client = new RelayClient(options, key);
    registry.set(key, client);
    client._start();
  }
  // One client per url+token+env whatever map a caller types it with: the map is a compile-time view.
  return client as unknown as RelayClient<M>;
}

/** UTF-8 byte length of a string (no TextEncoder needed). */
function utf8Length(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        n += 4;
        i++;
      } else n += 3;
    } else n += 3;
  }
  return n;
}

function defaultLifecycle(): AppLifecycle | undefined {
  const w: WxLike | undefined = typeof wx !== 'undefined' && wx ? wx : undefined;
  if (!w || typeof w.onAppShow !== 'function' || typeof w.onAppHide !== 'function') return undefined;
  const lc: AppLifecycle = {
    onShow: (cb) => w.onAppShow!(cb),
    onHide: (cb) => w.onAppHide!(cb),
  };
  if (typeof w.offAppShow === 'function') lc.offShow = (cb) => w.offAppShow!(cb);
  if (typeof w.offAppHide === 'function') lc.offHide = (cb) => w.offAppHide!(cb);
  return lc;
}

/** v when it is a positive number, else 0. */
function positive(v: unknown): number {
  return typeof v === 'number' && v > 0 ? v : 0;
}

function remove<T>(list: T[], item: T): void {
  const i = list.indexOf(item);
  if (i >= 0) list.splice(i, 1);
}

/**
 * One logical relay connection that survives reconnects. Create it with `createClient`.
 * M maps each message type to its data type (see AnyMessages).
 */
export class RelayClient<M extends object = AnyMessages> {
  private readonly o: Required<
    Pick<
      ClientOptions,
      | 'backoffBase'
      | 'backoffCap'
      | 'stableAfter'
      | 'heartbeatInterval'
      | 'heartbeatTimeout'
      | 'connectTimeout'
      | 'maxQueue'
      | 'maxFrameBytes'
      | 'random'
    >
  > &
    ClientOptions;
  private readonly key: string;
  private readonly factory: SocketFactory;
  private readonly idPrefix: string;
  private idCounter = 0;
  private refreshes = 0;
  private readonly how: CredentialTransport;

  private st: State = 'connecting';
  private cur: Attempt | null = null;
  private attempts = 0;
  private cursor: number | null;
  private sentSince: number | null = null;
  private peerSet: string[] = [];
  private hidden = false;

  private readonly pending = new Map<string, Pending>();
  private readonly handlers = new Map<string, Handler[]>();
  private readonly anyHandlers: Handler[] = [];
  private readonly stateHandlers: StateHandler[] = [];
  private readonly errorHandlers: ErrorHandler[] = [];
  private readonly resyncHandlers: ResyncHandler[] = [];

  private reconnectTimer: unknown = null;
  private connectTimer: unknown = null;
  private pingTimer: unknown = null;
  private watchdog: unknown = null;
  private stableTimer: unknown = null;
  private flushTimer: unknown = null;

  /** Frames waiting to be written on the current connection, in order: sends (Pending) and pings. */
  private outq: Array<Pending | string> = [];
  // Token bucket of the current connection (from relay.hello's limits): rate in tokens per ms, 0 = no pacing.
  private rate = 0;
  private cap = 0;
  private tokens = 0;
  private stamp = 0;
  private holdUntil = 0;
  /** Consecutive unavailable/unconfirmed refusals: the backoff of the next resend. */
  private busy = 0;
  // Effective heartbeat and frame limit; explicit options win over relay.hello.
  private hb: number;
  private hbTimeout: number;
  private frameMax: number;
  private readonly fixed: { hb: boolean; hbTimeout: boolean; frame: boolean };

  private lifecycle: AppLifecycle | undefined;
  private readonly showCb = () => this.onAppShow();
  private readonly hideCb = () => this.onAppHide();

  /** Prefer createClient(), which shares one client per url+token+env and connects it. */
  constructor(options: ClientOptions, key: string) {
    const given = (v: number | undefined): boolean => typeof v === 'number' && v >= 0;
    const num = (v: number | undefined, d: number): number => (given(v) ? v! : d);
    const interval = num(options.heartbeatInterval, 20000);
    this.fixed = {
      hb: given(options.heartbeatInterval),
      hbTimeout: given(options.heartbeatTimeout),
      frame: given(options.maxFrameBytes),
    };
    this.o = {
      ...options,
      backoffBase: num(options.backoffBase, 500),
      backoffCap: num(options.backoffCap, 30000),
      stableAfter: num(options.stableAfter, 5000),
      connectTimeout: num(options.connectTimeout, 15000),
      maxQueue: num(options.maxQueue, 1000),
      maxFrameBytes: num(options.maxFrameBytes, 65536),
      random: options.random || Math.random,
      heartbeatInterval: interval,
      heartbeatTimeout: num(options.heartbeatTimeout, interval + 10000),
    };
    if (!(this.o.maxQueue >= 1)) this.o.maxQueue = 1;
    this.hb = interval;
    this.hbTimeout = this.o.heartbeatTimeout;
    this.frameMax = this.o.maxFrameBytes;
    this.key = key;
    this.factory =
      options.socket ||
      (options.container
        ? wxContainerFactory(options.container)
        : defaultSocketFactory());
    this.how = options.credential || (typeof options.token === 'function' ? 'subprotocol' : 'query');
    this.idPrefix = `c-${Math.floor(this.o.random() * 0x7fffffff).toString(36)}${Date.now().toString(36).slice(-4)}`;
    this.cursor = typeof options.since === 'number' && options.since >= 0 ? options.since : null;
    this.lifecycle = options.lifecycle === false ? undefined : options.lifecycle || defaultLifecycle();
  }

  // ---------------------------------------------------------------- public API

  /** Current connection state. */
  get state(): State {
    return this.st;
  }

  /** The highest seq delivered to handlers (the resume cursor), or null before any. Persist it to resume after an app restart. */
  get lastSeq(): number | null {
    return this.cursor;
  }

  /** Envs of this token that the relay reports online (from relay.hello and relay.presence). */
  get peers(): string[] {
    return this.peerSet.slice();
  }

  /** Sends not yet acknowledged by the relay (sent or waiting to be sent). */
  get queued(): number {
    return this.pending.size;
  }

  /**
   * Handles frames of one type: application types, or system frames by their wire
   * name (`relay.hello`, `relay.presence`, `relay.error`). Returns an unsubscribe function.
   */
  on<K extends keyof M & string>(type: K, handler: (msg: RelayMessage<DataOf<M, K>>) => void): () => void;
  on<T = any>(type: string, handler: (msg: RelayMessage<T>) => void): () => void;
  on(type: string, handler: (msg: RelayMessage) => void): () => void {
    let list = this.handlers.get(type);
    if (!list) this.handlers.set(type, (list = []));
    list.push(handler as Handler);
    return () => remove(list!, handler as Handler);
  }

  /** Handles every application message (every type not starting with `relay.`). */
  onAny(handler: (msg: RelayMessage) => void): () => void {
    this.anyHandlers.push(handler);
    return () => remove(this.anyHandlers, handler);
  }

  /** Called on every state change, and again for each scheduled reconnect. */
  onState(handler: (state: State, detail: StateDetail) => void): () => void {
    this.stateHandlers.push(handler);
    return () => remove(this.stateHandlers, handler);
  }

  /** Called when a resume was asked for but the relay could not cover the gap (`relay.hello` resumed:false): reload app state. */
  onResync(handler: (hello: HelloData) => void): () => void {
    this.resyncHandlers.push(handler);
    return () => remove(this.resyncHandlers, handler);
  }

  /** Errors not tied to a send: relay.error without a known id, unparsable frames, handler exceptions, transport errors. */
  onError(handler: (err: RelayError) => void): () => void {
    this.errorHandlers.push(handler);
    return () => remove(this.errorHandlers, handler);
  }

  /**
   * Sends a message. Resolves with `{seq}` when the relay acknowledges it, rejects
   * with a RelayError when the relay refuses it or the client gives up on it. While
   * not connected the message is queued and sent, with the same id, once connected.
   */
  send<K extends keyof M & string>(type: K, data?: M[K], options: SendOptions = {}): Promise<SendResult> {
    if (this.st === 'closed' || this.st === 'replaced') {
      return Promise.reject(new RelayError(this.st, `relay: client is ${this.st}; create a new one to send`));
    }
    if (typeof type !== 'string' || type.length < 1 || type.length > 128 || type.indexOf('relay.') === 0) {
      return Promise.reject(
        new RelayError('invalid_argument', 'relay: type must be 1-128 chars and must not start with "relay."'),
      );
    }
    const id = `${this.idPrefix}-${++this.idCounter}`;
    const msg: { type: string; data?: unknown; to?: string[]; id: string } = { type, id };
    if (data !== undefined) msg.data = data;
    if (options.to !== undefined) msg.to = Array.isArray(options.to) ? options.to : [options.to];
    let frame: string;
    try {
      frame = JSON.stringify(msg);
    } catch (e) {
      return Promise.reject(new RelayError('invalid_argument', 'relay: data is not JSON-serialisable', { cause: e }));
    }
    const size = utf8Length(frame);
    if (this.frameMax > 0 && size > this.frameMax) return Promise.reject(this.tooLarge(id));
    return new Promise<SendResult>((resolve, reject) => {
      while (this.pending.size >= this.o.maxQueue) {
        const oldest = this.pending.values().next().value as Pending;
        this.pending.delete(oldest.id);
        oldest.reject(
          new RelayError(
            'queue_overflow',
            `relay: send queue full (maxQueue ${this.o.maxQueue}); gave up on the oldest unacknowledged message ${oldest.id}, which may or may not have been delivered`,
            { id: oldest.id },
          ),
        );
      }
      const p: Pending = { id, n: this.idCounter, frame, size, resolve, reject };
      this.pending.set(id, p);
      if (this.cur && this.cur.ready) this.push(p);
    });
  }

  /**
   * Closes the connection for good: pending sends are rejected (code `closed`)
   * and the next createClient() with the same url+token+env makes a new client.
   */
  close(code = 1000, reason = 'client closed'): void {
    if (this.st === 'closed' || this.st === 'replaced') return;
    this.finish('closed', code, reason, 'closed', 'relay: client closed');
  }

  // ---------------------------------------------------------------- connection

  /** @internal */
  _start(): void {
    if (this.lifecycle) {
      this.lifecycle.onShow(this.showCb);
      this.lifecycle.onHide(this.hideCb);
    }
    this.connect();
  }

  private buildUrl(credential: string): string {
    const q = [`v=1`];
    if (this.how === 'query') q.push(`token=${encodeURIComponent(credential)}`);
    q.push(`env=${encodeURIComponent(this.o.env)}`);
    this.sentSince = this.cursor;
    if (this.cursor !== null) q.push(`since=${this.cursor}`);
    const base = this.o.container ? this.o.container.path || '/socket' : String(this.o.url);
    return base + (base.indexOf('?') >= 0 ? '&' : '?') + q.join('&');
  }

  /** The socket options of one connection: the credential as a subprotocol or a header when so chosen. */
  private socketOptions(credential: string): SocketOptions {
    const opts: SocketOptions = { protocols: this.o.protocols };
    if (this.how === 'subprotocol') {
      const list = (this.o.protocols || []).slice();
      // relay.v1 too: a browser fails a connection whose offered subprotocols were all declined.
      if (list.indexOf('relay.v1') < 0) list.push('relay.v1');
      list.push('relay.auth.' + base64url(credential));
      opts.protocols = list;
    } else if (this.how === 'header') {
      opts.headers = { Authorization: 'Bearer ' + credential };
    }
    return opts;
  }

  private connect(): void {
    this.reconnectTimer = null;
    const attempt: Attempt = { dead: false, opened: false };
    this.cur = attempt;
    // The timeout covers getting the credential too: a token function that never settles is a failed attempt.
    if (this.o.connectTimeout > 0) {
      this.connectTimer = setTimeout(() => {
        this.connectTimer = null;
        this.drop(1006, 'connect timeout');
      }, this.o.connectTimeout);
    }
    const token = this.o.token;
    if (typeof token === 'string') {
      this.open(attempt, token);
      return;
    }
    this.fetchToken(token).then(
      (credential) => {
        if (!attempt.dead) this.open(attempt, credential);
      },
      (e) => {
        if (attempt.dead) return;
        this.emitError(new RelayError('token_error', 'relay: the token function failed', { cause: e }));
        this.onSocketClose(1006, 'no credential');
      },
    );
  }

  /** Calls the token function; anything but a non-empty string is a failure. */
  private fetchToken(source: TokenSource): Promise<string> {
    return new Promise<string>((resolve) => resolve(source())).then((credential) => {
      if (typeof credential !== 'string' || !credential) {
        throw new TypeError('relay: the token function returned no credential (a non-empty string)');
      }
      return credential;
    });
  }

  /**
   * The relay warned that the credential expires (token_expired): fetch a fresh one and send
   * relay.refresh ahead of everything queued, so that the session lives on. Without a token
   * function there is nothing to refresh with: the warning goes to onError.
   */
  private refresh(): boolean {
    const source = this.o.token;
    const a = this.cur;
    if (typeof source !== 'function' || !a || !a.ready) return false;
    this.fetchToken(source).then(
      (credential) => {
        if (this.cur !== a) return; // that connection is gone; the next one fetches its own credential
        const id = `${this.idPrefix}-r${++this.refreshes}`;
        this.outq.unshift(JSON.stringify({ type: 'relay.refresh', id, data: { token: credential } }));
        this.flush();
      },
      (e) => {
        if (this.cur === a) this.emitError(new RelayError('token_error', 'relay: the token function failed', { cause: e }));
      },
    );
    return true;
  }

  private open(attempt: Attempt, credential: string): void {
    const url = this.buildUrl(credential);
    const events: SocketEvents = {
      onOpen: () => {
        if (attempt.dead || attempt.opened) return;
        attempt.opened = true;
        this.clearTimer('connectTimer');
        // Pings start with relay.hello (which says how often); until then only watch for silence.
        this.armWatchdog();
      },
      onMessage: (data) => {
        if (!attempt.dead) this.onFrame(data);
      },
      onClose: (code, reason) => {
        if (!attempt.dead) this.onSocketClose(code, reason);
      },
      onError: (err) => {
        if (!attempt.dead) this.emitError(new RelayError('transport_error', 'relay: socket error', { cause: err }));
      },
    };
    let result: RelaySocket | Promise<RelaySocket>;
    try {
      result = this.factory(url, events, this.socketOptions(credential));
    } catch (e) {
      this.emitError(new RelayError('transport_error', 'relay: could not open a socket', { cause: e }));
      this.onSocketClose(1006, String(e));
      return;
    }
    if (result && typeof (result as Promise<RelaySocket>).then === 'function') {
      (result as Promise<RelaySocket>).then(
        (s) => {
          if (attempt.dead) safeClose(s, 1000, 'abandoned');
          else {
            attempt.socket = s;
            this.flush();
          }
        },
        (e) => {
          if (attempt.dead) return;
          this.emitError(new RelayError('transport_error', 'relay: could not open a socket', { cause: e }));
          this.onSocketClose(1006, String(e && (e as { errMsg?: string }).errMsg ? (e as { errMsg: string }).errMsg : e));
        },
      );
    } else {
      attempt.socket = result as RelaySocket;
    }
  }

  /** Abandons the current socket (heartbeat or connect timeout) and reconnects. */
  private drop(code: number, reason: string): void {
    const a = this.cur;
    if (a && a.socket) safeClose(a.socket, 1000, reason);
    this.onSocketClose(code, reason);
  }

  private onSocketClose(code: number, reason: string): void {
    const wasReady = !!(this.cur && this.cur.ready);
    if (this.cur) this.cur.dead = true;
    this.cur = null;
    this.stopConnectionTimers();
    if (this.st === 'closed' || this.st === 'replaced') return;
    // 4501 on a session that was open is its credential expiring (a refresh came too late or
    // failed): with a token function, a new credential may well pass, so reconnect (with since).
    const expired = code === CloseCode.Unauthorized && wasReady && typeof this.o.token === 'function';
    if (isTerminalCloseCode(code) && !expired) {
      const state: State = code === 4502 ? 'replaced' : 'closed';
      const errCode = terminalErrorCode(code);
      this.finish(state, code, reason, errCode, `relay: connection closed by the relay (${code}${reason ? ' ' + reason : ''})`);
      return;
    }
    // 4012 ends a healthy session at the relay's max_connection_age (before a platform such as
    // Cloud Run cuts it). The relay has already spread these closes over time, so come back at
    // once, resuming with since=, instead of waiting out a backoff.
    if (code === CloseCode.MaxAge && wasReady) {
      this.attempts = 0;
      this.scheduleReconnect(code, reason, true);
      return;
    }
    this.scheduleReconnect(code, reason);
  }

  private scheduleReconnect(code: number, reason: string, now = false): void {
    const delay = now ? 0 : backoffDelay(this.attempts, this.o.backoffBase, this.o.backoffCap, this.o.random);
    this.attempts++;
    this.setState('reconnecting', { code, reason, attempt: this.attempts, delay });
    this.clearTimer('reconnectTimer');
    this.reconnectTimer = setTimeout(() => this.connect(), delay);
  }

  private finish(state: State, code: number, reason: string, errCode: string, message: string): void {
    const a = this.cur;
    this.cur = null;
    if (a) {
      a.dead = true;
      // Browsers and wx accept only 1000 and 3000-4999 from the client side.
      if (a.socket) safeClose(a.socket, code === 1000 || (code >= 3000 && code <= 4999) ? code : 1000, reason);
    }
    this.stopConnectionTimers();
    this.clearTimer('reconnectTimer');
    if (registry.get(this.key) === this) registry.delete(this.key);
    if (this.lifecycle) {
      if (this.lifecycle.offShow) this.lifecycle.offShow(this.showCb);
      if (this.lifecycle.offHide) this.lifecycle.offHide(this.hideCb);
      this.lifecycle = undefined;
    }
    this.setState(state, { code, reason });
    const pend = Array.from(this.pending.values());
    this.pending.clear();
    for (const p of pend) p.reject(new RelayError(errCode, message, { id: p.id, closeCode: code }));
  }

  private setState(state: State, extra: Omit<StateDetail, 'prev'> = {}): void {
    const prev = this.st;
    this.st = state;
    const detail: StateDetail = { prev, ...extra };
    for (const h of this.stateHandlers.slice()) this.call(() => h(state, detail));
  }

  // ---------------------------------------------------------------- outgoing queue and pacing

  /** Queues a frame for the current connection and sends what the bucket allows. */
  private push(e: Pending | string): void {
    this.outq.push(e);
    this.flush();
  }

  private ping(): void {
    if (this.outq.indexOf(PING) < 0) this.push(PING); // one waiting ping is enough
  }

  /**
   * Writes queued frames in order while the token bucket has tokens; when it is
   * empty, one timer resumes once the next token is due.
   */
  private flush(): void {
    const a = this.cur;
    if (this.flushTimer !== null || !a || !a.ready || !a.socket) return;
    while (this.outq.length > 0) {
      const e = this.outq[0];
      if (typeof e !== 'string' && this.pending.get(e.id) !== e) {
        this.outq.shift(); // given up on (queue overflow) while waiting
        continue;
      }
      const wait = this.take();
      if (wait > 0) {
        this.flushTimer = setTimeout(() => {
          this.flushTimer = null;
          this.flush();
        }, wait);
        return;
      }
      this.outq.shift();
      try {
        a.socket.send(typeof e === 'string' ? e : e.frame);
      } catch (err) {
        // The frame stays pending and is resent after the reconnect this failure leads to.
        this.emitError(new RelayError('transport_error', 'relay: send failed', { cause: err }));
      }
      if (this.cur !== a) return;
    }
  }

  /** Takes a token from the bucket: 0 when it did, else ms until one is due. */
  private take(): number {
    const now = Date.now();
    if (now < this.holdUntil) return Math.min(this.holdUntil - now, 1000);
    if (this.rate <= 0) return 0;
    if (now > this.stamp) this.tokens = Math.min(this.cap, this.tokens + (now - this.stamp) * this.rate);
    this.stamp = now;
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return 0;
    }
    return Math.max(1, Math.ceil((1 - this.tokens) / this.rate));
  }

  /** Sets the bucket from relay.hello's limits, full (the relay's limiter starts full on every connection). */
  private pace(l: HelloLimits): void {
    const burst = Math.max(1, Math.floor(positive(l.burst)));
    this.rate = (positive(l.messagesPerSecond) * RATE_SHARE) / 1000;
    this.cap = Math.max(1, burst - Math.ceil(burst / 20));
    this.tokens = this.cap;
    this.stamp = Date.now();
    this.holdUntil = 0;
  }

  /**
   * The relay refused a send with rate_limited: it goes back into the queue at
   * its place by send order, and the bucket is emptied (or, with no known
   * limit, sending pauses for a second).
   */
  private retry(p: Pending): void {
    this.requeue(p);
    this.tokens = 0;
    this.stamp = Date.now();
    if (this.rate <= 0) this.holdUntil = this.stamp + 1000;
    this.flush();
  }

  /**
   * The relay could not take a send now (`unavailable`: certainly not
   * relayed) or does not know whether it did (`unconfirmed`): it goes back
   * to its place and is resent with the same id, which the relay
   * deduplicates, after a backoff that grows while refusals go on (250 ms
   * plus up to 250·2ⁿ ms, at most 5 s more) and resets on the next ack.
   */
  private retryLater(p: Pending): void {
    this.requeue(p);
    const hold = 250 + backoffDelay(this.busy++, 250, 5000, this.o.random);
    this.holdUntil = Math.max(this.holdUntil, Date.now() + hold);
    this.clearTimer('flushTimer'); // a pending flush may be due sooner than the hold
    this.flush();
  }

  /** Puts p back into the outgoing queue at its place by send order. */
  private requeue(p: Pending): void {
    const q = this.outq;
    if (q.indexOf(p) < 0) {
      let i = 0;
      while (i < q.length && (typeof q[i] === 'string' || (q[i] as Pending).n < p.n)) i++;
      q.splice(i, 0, p);
    }
  }

  private tooLarge(id: string): RelayError {
    return new RelayError('too_large', `relay: message is larger than maxFrameBytes (${this.frameMax})`, { id });
  }

  // ---------------------------------------------------------------- heartbeat

  private startHeartbeat(): void {
    this.stopHeartbeat();
    if (this.hb <= 0 || this.hidden) return;
    this.pingTimer = setInterval(() => this.ping(), this.hb);
    this.armWatchdog();
  }

  private armWatchdog(): void {
    if (this.hb <= 0 || this.hidden || !this.cur || !this.cur.opened) return;
    this.clearTimer('watchdog');
    this.watchdog = setTimeout(() => {
      this.watchdog = null;
      this.drop(1006, 'heartbeat timeout');
    }, this.hbTimeout);
  }

  private stopHeartbeat(): void {
    if (this.pingTimer !== null) clearInterval(this.pingTimer);
    this.pingTimer = null;
    this.clearTimer('watchdog');
  }

  private stopConnectionTimers(): void {
    this.stopHeartbeat();
    this.clearTimer('connectTimer');
    this.clearTimer('stableTimer');
    this.clearTimer('flushTimer');
    this.outq = []; // rebuilt from the pending sends on the next relay.hello
  }

  private clearTimer(name: 'reconnectTimer' | 'connectTimer' | 'watchdog' | 'stableTimer' | 'flushTimer'): void {
    if (this[name] !== null) clearTimeout(this[name]);
    this[name] = null;
  }

  private onAppHide(): void {
    this.hidden = true;
    this.stopHeartbeat();
  }

  private onAppShow(): void {
    this.hidden = false;
    if (this.st === 'closed' || this.st === 'replaced') return;
    if (this.reconnectTimer !== null) {
      // Waiting out a backoff: the app is back in front, try right away.
      this.clearTimer('reconnectTimer');
      this.attempts = 0;
      this.connect();
    } else if (this.cur && this.cur.ready) {
      // The socket may have died in the background without telling: probe it now.
      this.startHeartbeat();
      if (this.hb > 0) this.ping();
    } else if (this.cur && this.cur.opened) {
      this.armWatchdog(); // still waiting for relay.hello
    }
  }

  // ---------------------------------------------------------------- inbound

  private onFrame(text: string): void {
    this.armWatchdog();
    let f: any;
    try {
      f = JSON.parse(text);
    } catch (e) {
      this.emitError(new RelayError('bad_frame', 'relay: received a frame that is not JSON', { cause: e }));
      return;
    }
    if (!f || typeof f !== 'object' || typeof f.type !== 'string') {
      this.emitError(
        new RelayError('bad_frame', 'relay: received a frame without a type (is the relay serving wire v1?)'),
      );
      return;
    }
    const data = f.data && typeof f.data === 'object' ? f.data : {};
    switch (f.type) {
      case 'relay.pong':
        return;
      case 'relay.ack': {
        const p = typeof data.id === 'string' ? this.pending.get(data.id) : undefined;
        if (p) {
          this.pending.delete(p.id);
          this.busy = 0;
          p.resolve({ seq: data.seq });
        }
        return;
      }
      case 'relay.hello':
        this.onHello(data as HelloData);
        break;
      case 'relay.presence':
        if (typeof data.env === 'string') {
          remove(this.peerSet, data.env);
          if (data.online) this.peerSet.push(data.env);
        }
        break;
      case 'relay.error': {
        const p = typeof data.id === 'string' ? this.pending.get(data.id) : undefined;
        const err = new RelayError(String(data.code || 'error'), String(data.message || 'relay error'), {
          ref: data.ref,
          route: data.route,
          id: data.id,
        });
        // The relay's warning has no id; a refused relay.refresh (its id) goes to onError, never into another refresh.
        if (data.id === undefined && err.code === 'token_expired' && this.refresh()) break; // still seen by on('relay.error')
        if (p) {
          // The connection's own rate limit (no route): pace down and send it again. A route's
          // rate_limit is the app's policy, unknown to the client, and final like other refusals.
          if (err.code === 'rate_limited' && !data.route && this.cur && this.cur.ready) return this.retry(p);
          // The relay's backplane failed: resending with the same id is always safe.
          if ((err.code === 'unavailable' || err.code === 'unconfirmed') && this.cur && this.cur.ready) {
            return this.retryLater(p);
          }
          this.pending.delete(p.id);
          p.reject(err);
          return;
        }
        this.emitError(err);
        break;
      }
      default:
        if (typeof f.seq === 'number') {
          if (this.cursor !== null && f.seq <= this.cursor) return; // already delivered
          this.cursor = f.seq;
        }
    }
    this.deliver(f);
  }

  private onHello(h: HelloData): void {
    const asked = this.sentSince !== null;
    if (!asked) {
      // Fresh (live-only) session: the relay's current seq is where a later resume starts.
      if (typeof h.seq === 'number' && this.cursor === null) this.cursor = h.seq;
    } else if (h.resumed !== true) {
      // The history no longer covers our cursor (or the relay restarted): start over from its seq.
      this.cursor = typeof h.seq === 'number' ? h.seq : null;
    }
    this.peerSet = Array.isArray(h.peers) ? h.peers.filter((p) => typeof p === 'string') : [];
    const lim: HelloLimits = h.limits && typeof h.limits === 'object' ? h.limits : {};
    if (!this.fixed.frame && positive(lim.maxFrameBytes)) this.frameMax = lim.maxFrameBytes!;
    if (!this.fixed.hb && positive(h.heartbeat)) {
      this.hb = Math.max(MIN_HEARTBEAT, h.heartbeat!);
      if (!this.fixed.hbTimeout) this.hbTimeout = this.hb + 10000;
    }
    this.clearTimer('stableTimer');
    this.stableTimer = setTimeout(() => {
      this.stableTimer = null;
      this.attempts = 0;
    }, this.o.stableAfter);
    // Resend everything not yet acknowledged, in order, with the same ids, before
    // anything a state handler might send, paced to the relay's limits. A queued
    // send larger than the relay accepts would get the connection closed (1009): refuse it now.
    this.outq = [];
    for (const p of Array.from(this.pending.values())) {
      if (this.frameMax > 0 && p.size > this.frameMax) {
        this.pending.delete(p.id);
        p.reject(this.tooLarge(p.id));
      } else this.outq.push(p);
    }
    this.pace(lim);
    if (this.cur) this.cur.ready = true;
    this.flush();
    this.startHeartbeat();
    this.setState('open');
    if (asked && h.resumed !== true) {
      for (const r of this.resyncHandlers.slice()) this.call(() => r(h));
    }
  }

  private deliver(f: any): void {
    const msg: RelayMessage = { type: f.type, data: f.data };
    if (f.from !== undefined) msg.from = f.from;
    if (f.seq !== undefined) msg.seq = f.seq;
    if (f.id !== undefined) msg.id = f.id;
    if (f.ts !== undefined) msg.ts = f.ts;
    const list = this.handlers.get(f.type);
    if (list) for (const h of list.slice()) this.call(() => h(msg));
    if (f.type.indexOf('relay.') !== 0) for (const h of this.anyHandlers.slice()) this.call(() => h(msg));
  }

  private call(fn: () => void): void {
    try {
      fn();
    } catch (e) {
      this.emitError(new RelayError('handler_error', 'relay: a handler threw', { cause: e }), true);
    }
  }

  private emitError(err: RelayError, fromHandler = false): void {
    if (this.errorHandlers.length === 0) {
      if (fromHandler) {
        // Nobody listens: surface it like an uncaught exception, without breaking the socket loop.
        setTimeout(() => {
          throw err.cause !== undefined ? err.cause : err;
        }, 0);
      }
      return;
    }
    for (const h of this.errorHandlers.slice()) {
      try {
        h(err);
      } catch {
        // an error handler that throws is ignored
      }
    }
  }
}

function safeClose(s: RelaySocket, code: number, reason: string): void {
  try {
    s.close(code, reason);
  } catch {
    // already closed
  }
}
