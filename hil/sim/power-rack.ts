/**
 * The power side of a simulated rack, for the demo and tests: a Modbus TCP
 * meter (SDM630) whose power is the miners' total and whose frequency can be
 * scripted, an SNMP PDU (APC rPDU2) with one outlet feeding each miner, a
 * software GPIO input standing for the utility's trip relay contact and an
 * output for a "curtailed" lamp, the controller itself, and the signal
 * conditions watching the meter's frequency and the relay contact.
 */
import { softGpio, type SoftLine } from '../../drivers/gpio/soft.js';
import type { StartedSim } from './catalog.js';
import { ModbusMeterSim } from './modbus-meter-sim.js';
import { SnmpPduSim } from './snmp-pdu-sim.js';

export const DEMO_GPIO_CHIP = 'rackpilot-demo';
export const TRIP_OFFSET = 17;
export const LAMP_OFFSET = 27;
export const PDU_ID = 'pdu-01';
export const METER_ID = 'meter-01';
export const TRIP_ID = 'utility-trip';

export interface PowerRackOptions {
  miners: readonly StartedSim[];
  /** Nominal grid frequency (60 Hz: ERCOT thresholds in the signal conditions). */
  frequencyHz?: number;
  /** Meter sampling rate. */
  sampleHz?: number;
  /** Delay between PDU outlet switch-ons (inrush). */
  switchOnDelayMs?: number;
}

export interface PowerRack {
  meter: ModbusMeterSim;
  pdu: SnmpPduSim;
  /** The utility relay contact (a software GPIO input): `trip.set(1)` opens it. */
  trip: SoftLine;
  lamp: SoftLine;
  /** Device blocks for the agent's config (meter, PDU, GPIO lines, controller). */
  devices: Record<string, unknown>[];
  /** Signal conditions for the agent's config. */
  signals: Record<string, unknown>[];
  /** The PDU outlet feeding miner `i` (0-based), for the miners' `feed`. */
  feedOf(i: number): { pdu: string; outlet: string };
  /** A dip to `hz` in `inMs` for `forMs` (scripted in the meter). */
  scriptDip(inMs: number, forMs: number, hz?: number): void;
  /** Opens the trip contact in `inMs` for `forMs`. */
  scriptTrip(inMs: number, forMs: number): void;
  close(): Promise<void>;
}

export async function startPowerRack(o: PowerRackOptions): Promise<PowerRack> {
  const nominal = o.frequencyHz ?? 60;
  const minerPower = (i: number): number => o.miners[i]?.sim.power.powerW() ?? 0;
  const total = (): number => o.miners.reduce((sum, _m, i) => sum + minerPower(i), 0);

  const meter = new ModbusMeterSim({ meter: 'sdm630', frequencyHz: nominal, powerW: 0 });
  meter.model.powerSource = () => total() + 150; // plus the controller, switch and fans
  const m = await meter.listenTcp();

  const outlets = Math.max(1, o.miners.length);
  const pdu = new SnmpPduSim({ profile: 'apc-rpdu2', outlets, loadsW: o.miners.map((_m, i) => minerPower(i)) });
  const p = await pdu.listen();
  // the load behind each outlet follows its miner (curtailed miners draw little)
  const follow = setInterval(() => {
    for (let i = 0; i < o.miners.length; i++) pdu.setLoad(i + 1, minerPower(i));
  }, 250);
  follow.unref();

  // a fresh chip per rack, so two demo racks in one process (tests) do not share lines
  const chip = `${DEMO_GPIO_CHIP}-${Math.random().toString(36).slice(2, 8)}`;
  const trip = softGpio.chip(chip).line(TRIP_OFFSET);
  const lamp = softGpio.chip(chip).line(LAMP_OFFSET);
  const timers = new Set<NodeJS.Timeout>();
  const later = (ms: number, fn: () => void): void => {
    const t = setTimeout(() => {
      timers.delete(t);
      fn();
    }, ms);
    timers.add(t);
  };

  const devices: Record<string, unknown>[] = [
    { id: METER_ID, driver: 'modbus-meter', name: 'rack feeder meter', transport: 'tcp', host: m.host, port: m.port, meter: 'sdm630', sampleHz: o.sampleHz ?? 10 },
    {
      id: PDU_ID,
      driver: 'pdu-snmp',
      name: 'rack PDU A',
      host: p.host,
      port: p.port,
      profile: 'apc-rpdu2',
      snmp: { version: '2c', community: 'private' },
      outlets,
      switchOnDelayMs: o.switchOnDelayMs ?? 250,
    },
    { id: TRIP_ID, driver: 'gpio', name: 'utility trip relay contact', backend: 'soft', chip, offset: TRIP_OFFSET, direction: 'in', debounceMs: 5 },
    { id: 'curtailed-lamp', driver: 'gpio', name: '"curtailed" lamp', backend: 'soft', chip, offset: LAMP_OFFSET, direction: 'out', initial: false },
    { id: 'controller', driver: 'controller' },
  ];
  const signals: Record<string, unknown>[] = [
    // ERCOT fast frequency response set-point: 59.85 Hz; a dip must last 100 ms; stale meter -> fail-safe trip
    { id: 'underfrequency', source: METER_ID, channel: 'frequencyHz', below: nominal - 0.15, forMs: 100, hysteresis: 0.05, releaseMs: 1000, staleAfterMs: 3000 },
    { id: 'utility-trip', source: TRIP_ID, channel: 'input', above: 0.5, forMs: 0 },
  ];

  return {
    meter,
    pdu,
    trip,
    lamp,
    devices,
    signals,
    feedOf: (i) => ({ pdu: PDU_ID, outlet: String(i + 1) }),
    scriptDip: (inMs, forMs, hz = nominal - 0.2) => {
      meter.model.runScenario([{ atMs: inMs, forMs, frequencyHz: hz }]);
    },
    scriptTrip: (inMs, forMs) => {
      later(inMs, () => trip.set(1));
      later(inMs + forMs, () => trip.set(0));
    },
    close: async () => {
      clearInterval(follow);
      for (const t of timers) clearTimeout(t);
      await meter.close();
      await pdu.close();
    },
  };
}
