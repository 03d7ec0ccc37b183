import { test } from 'node:test';
import assert from 'node:assert/strict';
import { backoffDelay } from '../dist/index.mjs';

test('backoff ceiling doubles per attempt from base', () => {
  const almostOne = () => 0.999999;
  const got = [0, 1, 2, 3, 4].map((n) => backoffDelay(n, 100, 1e9, almostOne));
  assert.deepEqual(got, [99, 199, 399, 799, 1599]);
});

test('backoff is capped', () => {
  const almostOne = () => 0.999999;
  assert.equal(backoffDelay(5, 100, 1000, almostOne), 999);
  assert.equal(backoffDelay(50, 100, 1000, almostOne), 999);
  const huge = backoffDelay(5000, 500, 30000, almostOne);
  assert.ok(Number.isFinite(huge) && huge <= 30000, `huge attempt gives ${huge}`);
});

test('full jitter: delays stay in [0, min(cap, base*2^n)) and actually vary', () => {
  for (let n = 0; n < 12; n++) {
    const ceiling = Math.min(8000, 250 * 2 ** n);
    const seen = new Set();
    for (let i = 0; i < 200; i++) {
      const d = backoffDelay(n, 250, 8000);
      assert.ok(Number.isInteger(d), 'integer ms');
      assert.ok(d >= 0 && d < ceiling, `attempt ${n}: ${d} not in [0, ${ceiling})`);
      seen.add(d);
    }
    assert.ok(seen.size > 20, `attempt ${n}: jitter produced only ${seen.size} distinct values`);
  }
  assert.equal(backoffDelay(3, 250, 8000, () => 0), 0, 'random 0 gives 0 (full jitter has no floor)');
});

test('bad random values cannot push the delay outside the bounds', () => {
  assert.equal(backoffDelay(2, 100, 1000, () => 1), 0);
  assert.equal(backoffDelay(2, 100, 1000, () => -3), 0);
  assert.equal(backoffDelay(2, 100, 1000, () => NaN), 0);
});
