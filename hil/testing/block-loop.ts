/**
 * A preload for watchdog tests (`node --import <this> dist/agent/cli.js run`):
 * on SIGUSR2 the process's event loop is blocked by a busy wait of
 * $RP_BLOCK_MS milliseconds, as a stuck loop would be; the start and end
 * times are appended to $RP_BLOCK_LOG as one JSON line. Test-only: nothing
 * in the agent can block itself on request.
 */
import { appendFileSync } from 'node:fs';

process.on('SIGUSR2', () => {
  const ms = Number(process.env.RP_BLOCK_MS ?? '1500');
  const start = Date.now();
  while (Date.now() - start < ms) {
    // busy: no timer, no I/O callback can run
  }
  const end = Date.now();
  if (process.env.RP_BLOCK_LOG) appendFileSync(process.env.RP_BLOCK_LOG, `${JSON.stringify({ start, end })}\n`);
});
