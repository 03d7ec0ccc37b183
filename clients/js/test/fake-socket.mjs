// A fake socket factory for unit tests: every connection the client opens is
// recorded, and the test plays the relay's side by hand (open, frames, close).
// Nothing happens by itself, so tests are deterministic.

export class FakeSocket {
  constructor(url, events, options) {
    this.url = url;
    this.events = events;
    this.options = options;
    this.sent = [];
    this.closedByClient = null;
    this.isOpen = false;
  }

  // ---- what the client calls
  send(data) {
    if (!this.isOpen) throw new Error('fake socket: send while not open');
    this.sent.push(data);
  }
  close(code, reason) {
    this.closedByClient = { code, reason };
    this.isOpen = false;
  }

  // ---- what the test (the "relay") does
  open() {
    this.isOpen = true;
    this.events.onOpen();
  }
  /** Opens (if needed) and sends relay.hello. */
  hello(data = {}) {
    if (!this.isOpen) this.open();
    this.frame({
      type: 'relay.hello',
      data: { session: 's1', env: 'h5', peers: [], seq: 0, resumed: false, heartbeat: 25, ...data },
    });
  }
  frame(obj) {
    this.events.onMessage(typeof obj === 'string' ? obj : JSON.stringify(obj));
  }
  message(type, data, seq, extra = {}) {
    this.frame({ type, data, from: 'miniapp', seq, ts: 1764100000000 + seq, ...extra });
  }
  ack(id, seq) {
    this.frame({ type: 'relay.ack', data: { id, seq } });
  }
  /** The relay (or the network) closes the connection. */
  drop(code = 1006, reason = '') {
    this.isOpen = false;
    this.events.onClose(code, reason);
  }

  // ---- inspection
  get frames() {
    return this.sent.map((s) => JSON.parse(s));
  }
  get appFrames() {
    return this.frames.filter((f) => f.type !== 'relay.ping');
  }
  get query() {
    return new URL(this.url).searchParams;
  }
}

export class FakeNet {
  constructor() {
    this.sockets = [];
    this.factory = (url, events, options) => {
      const s = new FakeSocket(url, events, options);
      this.sockets.push(s);
      return s;
    };
  }
  get last() {
    return this.sockets[this.sockets.length - 1];
  }
  get count() {
    return this.sockets.length;
  }
}

let tokenCounter = 0;
/** A token no other test uses, so singletons never leak between tests. */
export function freshToken() {
  tokenCounter++;
  return `tok-${process.pid}-${tokenCounter}`;
}
