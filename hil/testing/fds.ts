import { readdirSync } from 'node:fs';

/** Open file descriptors of this process (Linux /proc); -1 where /proc is not available. */
export function openFds(): number {
  try {
    return readdirSync('/proc/self/fd').length;
  } catch {
    return -1;
  }
}

/** Waits until the fd count is at most `baseline + slack` (closes finish a tick after destroy()); returns the last count. */
export async function fdsBackTo(baseline: number, slack = 0, ms = 3000): Promise<number> {
  const t0 = Date.now();
  let n = openFds();
  while (n > baseline + slack && Date.now() - t0 < ms) {
    await new Promise((r) => setTimeout(r, 25));
    n = openFds();
  }
  return n;
}
