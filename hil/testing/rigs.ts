import { afterEach } from 'node:test';

/** What a driver test starts: a driver and the simulator it talks to. */
export interface ClosableRig {
  driver: { stop(): Promise<void> };
  sim: { close(): Promise<void> };
}

/**
 * The list a test file puts its rigs in: after every test, each one's driver
 * is stopped, then its simulator closed, and the list emptied.
 */
export function rigsClosedAfterEach<R extends ClosableRig>(): R[] {
  const rigs: R[] = [];
  afterEach(async () => {
    for (const r of rigs.splice(0)) {
      await r.driver.stop();
      await r.sim.close();
    }
  });
  return rigs;
}
