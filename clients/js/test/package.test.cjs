// The CommonJS build and the package "exports" map, loaded the way a require() user would.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');

test('require() by package name gets the CJS build with the full API', () => {
  const sdk = require('@pairrelay/client');
  assert.equal(require.resolve('@pairrelay/client'), path.join(__dirname, '..', 'dist', 'index.cjs'));
  for (const name of [
    'createClient',
    'RelayError',
    'CloseCode',
    'isTerminalCloseCode',
    'backoffDelay',
    'webSocketFactory',
    'wxSocketFactory',
    'wxContainerFactory',
    'socketTaskFactory',
    'adaptSocketTask',
    'defaultSocketFactory',
  ]) {
    assert.ok(name in sdk, `${name} is exported`);
  }
  assert.equal(sdk.CloseCode.Replaced, 4502);
  const err = new sdk.RelayError('x', 'y', { ref: 'r' });
  assert.ok(err instanceof Error);
  assert.equal(err.ref, 'r');
});

test('import() by package name gets the ESM build with the same API', async () => {
  const esm = await import('@pairrelay/client');
  const cjs = require('@pairrelay/client');
  assert.deepEqual(Object.keys(esm).filter((k) => k !== 'default').sort(), Object.keys(cjs).sort());
});

test('package.json points every condition at files that exist, and has no runtime dependencies', () => {
  const root = path.join(__dirname, '..');
  const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
  assert.equal(pkg.name, '@pairrelay/client');
  assert.equal(pkg.dependencies, undefined);
  const targets = [pkg.main, pkg.module, pkg.types];
  const walk = (v) => (typeof v === 'string' ? targets.push(v) : Object.values(v).forEach(walk));
  walk(pkg.exports['.']);
  for (const t of targets) assert.ok(fs.existsSync(path.join(root, t)), `${t} exists`);
  // WeChat's Build npm copies the `miniprogram` directory; its index.js must be the CJS build.
  assert.equal(pkg.miniprogram, 'dist/miniprogram');
  assert.equal(
    fs.readFileSync(path.join(root, pkg.miniprogram, 'index.js'), 'utf8'),
    fs.readFileSync(path.join(root, pkg.main), 'utf8'),
  );
  const cjsTypes = JSON.parse(fs.readFileSync(path.join(root, 'dist/cjs-types/package.json'), 'utf8'));
  assert.equal(cjsTypes.type, 'commonjs');
  for (const [name, version] of Object.entries(pkg.devDependencies)) {
    assert.match(version, /^\d+\.\d+\.\d+$/, `${name} is pinned to an exact version`);
  }
});
