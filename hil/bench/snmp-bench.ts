/**
 * SNMP PDU benchmark (prints figures, asserts nothing): outlet switch round
 * trips against the SNMP PDU simulator on 127.0.0.1 (net-snmp on both sides).
 *   - set + confirming get: one SNMP set of the outlet command, then one get
 *     of the outlet state that shows the new state (SnmpClient directly);
 *   - switchOutlet(): the driver's whole action (set, read-back poll every
 *     20 ms until confirmed; no switch-on spacing);
 *   - read(): a full telemetry read of an 8-outlet, 3-phase PDU.
 * The simulated outlet switches at once (transitionMs 0); a real PDU adds its
 * own relay time.
 *   npm run bench:snmp
 */
import { pino } from 'pino';
import { SnmpClient } from '../../drivers/pdu-snmp/client.js';
import { pduSnmpDriver } from '../../drivers/pdu-snmp/index.js';
import { decodeOutletState, fillOid, PROFILES, type ProfileId } from '../../drivers/pdu-snmp/profiles.js';
import { pduSnmpConfigSchema } from '../../drivers/pdu-snmp/schema.js';
import { SnmpPduSim } from '../sim/snmp-pdu-sim.js';

const N = Number(process.env.BENCH_N ?? 300);

function stats(xs: number[]): string {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p: number) => (s[Math.min(s.length - 1, Math.floor(p * s.length))] ?? NaN).toFixed(2);
  return `median ${q(0.5)} ms, p90 ${q(0.9)} ms, p99 ${q(0.99)} ms, max ${(s[s.length - 1] ?? NaN).toFixed(2)} ms (n=${s.length})`;
}

async function bench(profileId: ProfileId, v3: boolean): Promise<void> {
  const profile = PROFILES[profileId];
  const user = { name: 'ops', authProtocol: 'sha' as const, authKey: 'authkey-123', privProtocol: 'aes' as const, privKey: 'privkey-123' };
  const sim = new SnmpPduSim({ profile: profileId, outlets: 8, phases: 3, transitionMs: 0, users: [user] });
  const { port } = await sim.listen();
  const snmp = v3 ? { version: '3' as const, user: 'ops', authProtocol: 'sha' as const, authKey: user.authKey, privProtocol: 'aes' as const, privKey: user.privKey, retries: 0 } : { version: '2c' as const, community: 'private', retries: 0 };
  const label = `${profileId} ${v3 ? 'v3 authPriv (SHA/AES)' : 'v2c'}`;

  const client = new SnmpClient({ deviceId: 'bench', host: '127.0.0.1', port, requestMs: 2000, maxOidsPerRequest: 40, snmp });
  client.open();
  const params = { unit: profile.defaults.unit, cord: profile.defaults.cord, outlet: 3 };
  const stateOid = fillOid(profile.outletState.oid, params);
  const rt: number[] = [];
  for (let i = 0; i < N + 20; i++) {
    const on = i % 2 === 1;
    const w = on ? profile.switchOn : profile.switchOff;
    const t0 = performance.now();
    await client.setInteger(fillOid(w.oid, params), w.value);
    for (;;) {
      const [v] = await client.get([stateOid]);
      if (v !== null && v !== undefined && decodeOutletState(profile, v) === (on ? 'on' : 'off')) break;
    }
    if (i >= 20) rt.push(performance.now() - t0);
  }
  client.close();

  const driver = pduSnmpDriver.create(
    pduSnmpConfigSchema.parse({ id: 'bench', driver: 'pdu-snmp', host: '127.0.0.1', port, profile: profileId, outlets: 8, phases: 3, snmp, switchOnDelayMs: 0, confirmPollMs: 20 }),
    { logger: pino({ level: 'silent' }), now: Date.now },
  );
  await driver.start();
  const act: number[] = [];
  const reads: number[] = [];
  for (let i = 0; i < N; i++) {
    const t0 = performance.now();
    await driver.switchOutlet?.('5', i % 2 === 1, { deadlineMs: 5000 });
    act.push(performance.now() - t0);
    const t1 = performance.now();
    const r = await driver.read({ deadlineMs: 5000 });
    if (r.freshness !== 'fresh') throw new Error(`read failed: ${JSON.stringify(r.error)}`);
    reads.push(performance.now() - t1);
  }
  await driver.stop();
  await sim.close();
  process.stdout.write(`${label}\n  set + confirming get: ${stats(rt)}\n  switchOutlet():       ${stats(act)}\n  read() 8 outlets:     ${stats(reads)}\n`);
}

async function main(): Promise<void> {
  process.stdout.write(`SNMP outlet switch round trip to the simulator on 127.0.0.1 (node ${process.version}, ${N} switches each)\n`);
  await bench('apc-rpdu2', false);
  await bench('raritan-pdu2', true);
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});
