// WeChat's Build npm on the mini program example: installs miniprogram-ci (pinned) from
// npm into a temporary directory, copies examples/miniprogram there, installs the SDK
// from this checkout as its package.json says (file:../.., with --install-links so that
// it is a copy, as a registry install would be), runs packNpm offline and checks that
// miniprogram_npm/@pairrelay/client is produced and loads the way the mini program
// runtime loads it. Exits non-zero on any failure. Needs npm and the npm registry.
//
//   npm run build && node scripts/packnpm-test.mjs
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import vm from 'node:vm';

const MINIPROGRAM_CI = '2.1.42';
const ACORN = '8.15.0';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const work = mkdtempSync(join(tmpdir(), 'relay-packnpm-'));
let failed = false;
const fail = (msg) => {
  console.error(`packnpm-test: FAIL: ${msg}`);
  failed = true;
};

try {
  const npm = (cwd, args) => execFileSync('npm', [...args, '--no-audit', '--no-fund', '--loglevel=error'], { cwd, stdio: 'inherit' });
  const tools = join(work, 'tools');
  writeFileSync(join(work, 'package.json'), '{"private":true}\n');
  execFileSync('mkdir', ['-p', tools]);
  writeFileSync(join(tools, 'package.json'), '{"private":true}\n');
  console.log(`packnpm-test: installing miniprogram-ci@${MINIPROGRAM_CI} and acorn@${ACORN}`);
  npm(tools, ['install', '--ignore-scripts', `miniprogram-ci@${MINIPROGRAM_CI}`, `acorn@${ACORN}`]);
  const req = createRequire(join(tools, 'package.json'));
  const ci = req('miniprogram-ci');
  const acorn = req('acorn');

  const project = join(work, 'project');
  cpSync(join(root, 'examples/miniprogram'), project, { recursive: true });
  const pkgPath = join(project, 'package.json');
  const pkg = JSON.parse(readFileSync(pkgPath, 'utf8'));
  // The example's file:../.. is relative to its place in the checkout.
  pkg.dependencies['@pairrelay/client'] = `file:${root}`;
  writeFileSync(pkgPath, JSON.stringify(pkg, null, 2));
  npm(project, ['install', '--install-links']);

  // packNpm reads no key and contacts no server, but ci.Project refuses to be built without
  // privateKey or privateKeyPath (upload and preview need a real one).
  const proj = new ci.Project({
    appid: 'touristappid',
    type: 'miniProgram',
    projectPath: project,
    privateKey: 'not-used-by-packNpm',
    ignores: ['node_modules/**/*'],
  });
  let report;
  const warnings = await ci.packNpm(proj, { reporter: (r) => (report = r) });
  console.log('packnpm-test: packNpm report', JSON.stringify(report), 'warnings', JSON.stringify(warnings));
  if (warnings && warnings.length) fail(`packNpm warned: ${JSON.stringify(warnings)}`);

  const out = join(project, 'miniprogram_npm/@pairrelay/client/index.js');
  if (!existsSync(out)) throw new Error(`packNpm did not produce ${out}`);
  const code = readFileSync(out, 'utf8');

  // ES level: WeChat's JS support page says the base library polyfills APIs but not
  // syntax (async/await needs the developer tool's "ES6 to ES5"), so the packed file must
  // parse as ES2015 script code: no async/await, **, or later syntax.
  try {
    acorn.parse(code, { ecmaVersion: 2015, sourceType: 'script' });
  } catch (e) {
    fail(`miniprogram_npm/@pairrelay/client/index.js is not ES2015 syntax: ${e.message}`);
  }
  // WeChat forbids eval and new Function (except new Function('return this')).
  if (/\beval\s*\(|\bnew\s+Function\b|\bFunction\s*\(/.test(code)) fail('the packed file uses eval or Function()');

  // Load it like the runtime: a CommonJS wrapper with module/exports/require, where
  // require knows no Node built-in, and a context with only wx-like globals.
  const required = [];
  const sandbox = vm.createContext({
    wx: { connectSocket() { throw new Error('not in this test'); }, onAppShow() {}, onAppHide() {} },
    console,
    setTimeout,
    clearTimeout,
    setInterval,
    clearInterval,
  });
  const module = { exports: {} };
  const fn = vm.runInContext(`(function (module, exports, require) {${code}\n})`, sandbox, { filename: out });
  fn(module, module.exports, (name) => {
    required.push(name);
    throw new Error(`require('${name}') is not available in a mini program`);
  });
  if (required.length) fail(`the packed file requires ${required.join(', ')}`);
  for (const name of ['createClient', 'wxSocketFactory', 'wxContainerFactory', 'CloseCode', 'RelayError']) {
    if (!(name in module.exports)) fail(`the packed module does not export ${name}`);
  }
  if (typeof module.exports.createClient !== 'function') fail('createClient is not a function');
  if (!failed) console.log(`packnpm-test: ok (miniprogram-ci ${MINIPROGRAM_CI}, acorn ${ACORN})`);
} catch (e) {
  fail(e && e.stack ? e.stack : String(e));
} finally {
  rmSync(work, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
