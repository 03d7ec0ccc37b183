// Builds dist/: index.mjs (ESM), index.cjs (CJS), miniprogram/index.js (CJS), types/ (ESM .d.ts) and
// cjs-types/ (the same .d.ts under a {"type":"commonjs"} package.json so that
// TypeScript reads them as CommonJS for require() consumers).
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(root, 'dist');
rmSync(dist, { recursive: true, force: true });

const common = {
  entryPoints: [join(root, 'src/index.ts')],
  bundle: true,
  platform: 'neutral',
  target: 'es2017',
  sourcemap: true,
  legalComments: 'none',
  logLevel: 'warning',
};
await build({ ...common, format: 'esm', outfile: join(dist, 'index.mjs') });
await build({ ...common, format: 'cjs', outfile: join(dist, 'index.cjs') });
// WeChat's Build npm (miniprogram-ci packNpm) appends ".js" to a `main` that does not end
// in .js or .json, so it cannot find dist/index.cjs. It copies the directory named by the
// package's `miniprogram` field as is instead: the same CommonJS build as index.js there,
// under a {"type":"commonjs"} package.json so that Node reads it as CommonJS too.
const mp = join(dist, 'miniprogram');
mkdirSync(mp, { recursive: true });
cpSync(join(dist, 'index.cjs'), join(mp, 'index.js'));
writeFileSync(join(mp, 'package.json'), '{"type":"commonjs"}\n');

const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
try {
  // Type-checks the sources and writes the declarations.
  execFileSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.json')], { stdio: 'inherit' });
} catch {
  console.error('build failed: tsc reported errors (above)');
  process.exit(1);
}

const cjsTypes = join(dist, 'cjs-types');
mkdirSync(cjsTypes, { recursive: true });
cpSync(join(dist, 'types'), cjsTypes, { recursive: true });
writeFileSync(join(cjsTypes, 'package.json'), '{"type":"commonjs"}\n');
console.log('built dist/index.mjs, dist/index.cjs, dist/miniprogram, dist/types, dist/cjs-types');
