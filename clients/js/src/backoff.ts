/**
 * Exponential backoff with full jitter: a uniformly random delay in
 * [0, min(cap, base * 2^attempt)). `attempt` counts from 0 for the first retry.
 */
export function backoffDelay(
  attempt: number,
  base: number,
  cap: number,
  random: () => number = Math.random,
): number {
  const ceiling = Math.min(cap, base * Math.pow(2, Math.min(attempt, 30)));
  const r = random();
  const unit = r >= 0 && r < 1 ? r : 0;
  return Math.floor(unit * ceiling);
}
