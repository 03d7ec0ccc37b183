// Mini program entry: one relay client for the whole app, over WeChat Cloud Hosting
// (wx.cloud.connectContainer). Fill in CLOUD_ENV and SERVICE.
const { createClient } = require('@pairrelay/client');

const CLOUD_ENV = 'prod-xxxxxxxx'; // your Cloud Hosting environment id (config.env of connectContainer)
const SERVICE = 'relay'; //           the Cloud Hosting service that runs relay
const RELAY_ENV = 'miniapp'; //       this side's env name in relay.yaml

App({
  globalData: { token: '' },

  onLaunch(options) {
    wx.cloud.init({ env: CLOUD_ENV });
    // The pairing token comes with the link or QR code that opened the mini program
    // (…?token=…); 'demo' lets you try it by hand.
    const query = (options && options.query) || {};
    this.globalData.token = query.token || 'demo';
  },

  /**
   * The relay client. createClient returns the same instance for the same
   * container + token + env, so every page may call this: there is only one socket.
   * After a 'replaced' or 'closed' state it makes a new client (a new connection).
   */
  relay() {
    return createClient({
      container: { env: CLOUD_ENV, service: SERVICE, path: '/socket' },
      token: this.globalData.token,
      env: RELAY_ENV,
      // Self-hosted relay instead of Cloud Hosting (the domain must be a socket legal domain):
      // url: 'wss://relay.example.com/socket',
    });
  },
});
