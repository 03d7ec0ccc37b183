// Prints the minified + gzipped size of the ESM bundle (what an app bundler ships).
import { build } from 'esbuild';
import { gzipSync } from 'node:zlib';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = await build({
  entryPoints: [join(root, 'src/index.ts')],
  bundle: true,
  platform: 'neutral',
  target: 'es2017',
  format: 'esm',
  minify: true,
  legalComments: 'none',
  write: false,
});
const code = out.outputFiles[0].contents;
const gz = gzipSync(code, { level: 9 }).length;
console.log(`ESM bundle: ${code.length} bytes minified, ${gz} bytes minified+gzipped (${(gz / 1024).toFixed(2)} KiB)`);
