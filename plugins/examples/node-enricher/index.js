// A relay message plugin in Node.js, on @pairrelay/plugin-sdk (plugins/sdk-node),
// which hides the protocol: the plugin is this object and serve().
//
// Which messages reach it is the route's business (match: in relay.yaml):
// handle works on whatever it is given, so that copying this file for another
// route needs no change here.
//
// Log with console.error: stderr lands in relay's log with the plugin's name.
'use strict';

const { serve, reject, decodeConfig } = require('@pairrelay/plugin-sdk');

let settings = { field: 'enrichedAt', source: 'node', api_keys: '' };

const plugin = {
  name: 'node-enricher',
  summary: 'Stamps message data with the time and a source.',
  fields: [
    { name: 'field', type: 'string', doc: 'Key that receives the time in ms.', default: 'enrichedAt' },
    { name: 'source', type: 'string', doc: 'Value of data.source.', default: 'node' },
    { name: 'api_keys', type: 'string', doc: 'For auth provider plugin: KEY=PAIR,… credentials and the pairing key each admits.' },
  ],

  // The route entry's config: a mistake fails relay check.
  configure(config) {
    settings = decodeConfig(config, { field: 'enrichedAt', source: 'node', api_keys: '' });
  },

  // Return the message to pass it on, [] to drop it, reject(...) to refuse it.
  handle(msg) {
    const data = msg.data;
    if (data === null || typeof data !== 'object' || Array.isArray(data)) {
      return reject('invalid_data', `${msg.type} needs an object as data`);
    }
    data[settings.field] = Date.now();
    data.source = settings.source;
    if (typeof data.title === 'string') data.titleUpper = data.title.toUpperCase();
    return msg;
  },

  // relay's auth provider (auth: {provider: plugin, plugin: {name: node-enricher,
  // config: {api_keys: "KEY=PAIR,…"}}}). A real one would look the credential
  // up in a session store. Never put the credential in a message or a log line.
  authenticate(req) {
    for (const entry of settings.api_keys.split(',')) {
      const [key, pair] = entry.split('=');
      if (key && pair && key === req.credential) {
        return {
          key: pair, // any env
          expiresAt: Date.now() + 3600 * 1000, // the session ends (4501) unless refreshed
          claims: { source: settings.source, env: req.env },
        };
      }
    }
    return reject('unauthorized', 'unknown API key');
  },
};

if (require.main === module) serve(plugin);
module.exports = plugin;
