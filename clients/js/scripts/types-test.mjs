// The TypeScript compile test of typed messages: generates declarations
// from test/types/relay.yaml with `relay types -lang ts` (go run, offline
// like the e2e build), then compiles test/types/usage.ts with tsc against
// the built declarations (dist/types). usage.ts marks every line that must
// not compile with @ts-expect-error, so tsc fails both when valid data is
// refused and when a wrong field is accepted.
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const repo = join(root, '..', '..');
if (!existsSync(join(root, 'dist/types/index.d.ts'))) {
  console.error('types-test: dist/types is missing: run `npm run build` first');
  process.exit(1);
}
const work = mkdtempSync(join(tmpdir(), 'relay-types-test-'));
process.on('exit', () => rmSync(work, { recursive: true, force: true }));

const env = { ...process.env, GOPROXY: process.env.GOPROXY || 'off', GOTOOLCHAIN: process.env.GOTOOLCHAIN || 'local' };
execFileSync(
  'go',
  ['run', './cmd/relay', 'types', '-lang', 'ts', '-c', join(root, 'test/types/relay.yaml'), '-o', join(work, 'relay-messages.ts')],
  { cwd: repo, env, stdio: 'inherit' },
);
copyFileSync(join(root, 'test/types/usage.ts'), join(work, 'usage.ts'));
writeFileSync(
  join(work, 'tsconfig.json'),
  JSON.stringify({
    compilerOptions: {
      target: 'ES2017',
      lib: ['ES2017'],
      module: 'ESNext',
      moduleResolution: 'Bundler',
      strict: true,
      noEmit: true,
      types: [],
      paths: { '@pairrelay/client': [join(root, 'dist/types/index.d.ts')] },
    },
    files: ['usage.ts'],
  }),
);
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
try {
  execFileSync(process.execPath, [tsc, '-p', join(work, 'tsconfig.json')], { stdio: 'inherit' });
} catch {
  console.error('types-test: FAILED: tsc reported the errors above in test/types/usage.ts');
  process.exit(1);
}
console.log('types-test: typed messages compile, and every wrong field fails to compile');
