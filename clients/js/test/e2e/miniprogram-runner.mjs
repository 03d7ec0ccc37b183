// Runs a mini program's JavaScript (app.js + the first page of app.json) in
// Node the way the mini-program runtime does: every file is a CommonJS module
// with `wx`, `App`, `Page` and `getApp` in scope, and `require('@pairrelay/client')`
// gets the package's CommonJS build, as after "Build npm".
//
// Each loadMiniProgram() call is a separate "device": it gets its own copy of
// the SDK module (so createClient's shared-client registry is per device, as
// on a phone) and its own `wx`. Only the logic layer runs: WXML is not
// rendered; tests read `page.data` and call the page's methods (bindtap etc.).
import { readFileSync, existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { JS_ROOT } from './harness.mjs';

const SDK_CJS = join(JS_ROOT, 'dist/index.cjs');

/**
 * @param {string} dir the mini program root (with app.json)
 * @param {{wx: object, launch?: object}} options `launch` is what onLaunch/onShow get ({query, scene, path})
 * @returns {{app: object, page: object, pagePath: string, unload(): void}}
 */
export function loadMiniProgram(dir, { wx, launch = { query: {}, scene: 1001 } }) {
  const appJson = JSON.parse(readFileSync(join(dir, 'app.json'), 'utf8'));
  if (!Array.isArray(appJson.pages) || appJson.pages.length === 0) throw new Error('app.json lists no pages');
  let appInstance;
  let pageDef;
  const scope = {
    wx,
    App(def) {
      appInstance = def; // getApp() returns the object given to App()
    },
    Page(def) {
      pageDef = def;
    },
    getApp() {
      return appInstance;
    },
  };
  const cache = new Map();
  const load = (file) => {
    if (cache.has(file)) return cache.get(file).exports;
    const module = { exports: {} };
    cache.set(file, module);
    const src = readFileSync(file, 'utf8');
    const names = Object.keys(scope);
    const fn = new Function('require', 'module', 'exports', ...names, `${src}\n//# sourceURL=${file}`);
    const req = (id) => {
      if (id === '@pairrelay/client') return load(SDK_CJS);
      if (id.startsWith('.')) {
        const target = resolve(dirname(file), id);
        return load(existsSync(target) ? target : target + '.js');
      }
      throw new Error(`mini program runner: cannot require ${id}`);
    };
    fn(req, module, module.exports, ...names.map((n) => scope[n]));
    return module.exports;
  };

  load(join(dir, 'app.js'));
  if (!appInstance) throw new Error('app.js did not call App()');
  if (appInstance.onLaunch) appInstance.onLaunch(launch);
  if (appInstance.onShow) appInstance.onShow(launch);

  const pagePath = appJson.pages[0];
  for (const ext of ['.js', '.wxml', '.json']) {
    if (!existsSync(join(dir, pagePath + ext))) throw new Error(`${pagePath}${ext} is missing`);
  }
  load(join(dir, pagePath + '.js'));
  if (!pageDef) throw new Error(`${pagePath}.js did not call Page()`);
  const page = { ...pageDef, data: structuredClone(pageDef.data || {}), route: pagePath };
  page.setData = function setData(patch, cb) {
    Object.assign(this.data, structuredClone(patch));
    if (cb) cb();
  };
  if (page.onLoad) page.onLoad(launch.query || {});
  if (page.onShow) page.onShow();
  return {
    app: appInstance,
    page,
    pagePath,
    unload() {
      if (page.onUnload) page.onUnload();
    },
  };
}
