// One page: connection state, peers, incoming messages and a send box.
const app = getApp();

const MAX_MESSAGES = 50;
let entryKey = 0;

Page({
  data: {
    token: '',
    state: 'connecting',
    detail: '',
    peers: 'none',
    draft: '',
    messages: [], // newest first: { key, kind: 'in' | 'out' | 'sys' | 'err', text }
  },

  onLoad() {
    this.connect();
  },

  onUnload() {
    this.unsubscribe();
  },

  connect() {
    this.unsubscribe();
    const relay = app.relay();
    this.relay = relay;
    const peers = () => (relay.peers.length ? relay.peers.join(', ') : 'none');
    this.setData({ token: app.globalData.token, state: relay.state, peers: peers() });
    // The client outlives the page: remove the page's handlers when it unloads.
    this.offs = [
      relay.onState((state, d) => {
        let detail = '';
        if (state === 'reconnecting') detail = `retry ${d.attempt} in ${d.delay} ms`;
        if (state === 'replaced') detail = 'opened on another device';
        if (state === 'closed') detail = `closed (${d.code})`;
        this.setData({ state, detail, peers: peers() });
      }),
      relay.onAny((m) => {
        const label = m.type === '' ? '(text)' : m.type;
        this.log('in', `#${m.seq} ${m.from} → ${label}: ${typeof m.data === 'string' ? m.data : JSON.stringify(m.data)}`);
      }),
      relay.on('relay.presence', (m) => {
        this.setData({ peers: peers() });
        this.log('sys', `${m.data.env} is ${m.data.online ? 'online' : 'offline'}`);
      }),
      relay.onResync(() => this.log('sys', 'missed messages could not be replayed: reload your data')),
      relay.onError((e) => this.log('err', `${e.code}: ${e.message}`)),
    ];
  },

  unsubscribe() {
    (this.offs || []).forEach((off) => off());
    this.offs = [];
  },

  log(kind, text) {
    entryKey += 1;
    const messages = [{ key: entryKey, kind, text }].concat(this.data.messages).slice(0, MAX_MESSAGES);
    this.setData({ messages });
  },

  onInput(e) {
    this.setData({ draft: e.detail.value });
  },

  onSend() {
    const text = this.data.draft.trim();
    if (!text) return;
    this.setData({ draft: '' });
    this.log('out', `note: ${text}`);
    // Queued while offline and resent until the relay acknowledges it.
    this.relay.send('note', text).then(
      ({ seq }) => this.log('out', `acknowledged #${seq}`),
      (err) => {
        this.log('err', `not sent (${err.code})`);
        wx.showToast({ title: `not sent: ${err.code}`, icon: 'none' });
      },
    );
  },

  // After 'replaced' (the same token was opened elsewhere): take the session back.
  onTakeOver() {
    this.connect();
  },
});
