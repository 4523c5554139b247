/**
 * One simulator per ASIC firmware family, ready to drive: `start()` launches
 * that family's personality on loopback with credentials it accepts (writes
 * enabled) and returns the device block its driver needs for curtail and
 * restore to be capable and confirmable (ports, credentials, power-target
 * ranges). Used by the demo rack, the mixed-family benchmark and tests.
 *
 * Timings: the demo's power model takes a few seconds to sleep and a few to
 * ramp back (something to watch); `fast` (tests, benchmarks) takes 100-300 ms.
 */
import { AntminerSim } from './antminer-sim.js';
import { AuradineSim } from './auradine-sim.js';
import { AvalonSim } from './avalon-sim.js';
import { BraiinsSim } from './braiins-sim.js';
import { EpicSim } from './epic-sim.js';
import { LuxosSim } from './luxos-sim.js';
import type { PowerModel } from './power-model.js';
import { VnishSim } from './vnish-sim.js';
import { WhatsminerV2Sim } from './whatsminer-v2-sim.js';
import { WhatsminerV3Sim } from './whatsminer-v3-sim.js';

export interface SimStartOptions {
  /** Loopback address to bind (default 127.0.0.1). */
  host?: string;
  /** Test/bench timings (~150 ms to sleep, ~200 ms to ramp back) instead of demo ones (seconds). */
  fast?: boolean;
  /** Overrides the power model's timings chosen by `fast` (benchmarks: 0 = instant). */
  timing?: Partial<Timing>;
  /** Position in a rack: varies the draw a little so a rack does not look cloned. */
  index?: number;
  /**
   * Fixed ports by role instead of ephemeral ones, so that simulators on
   * several loopback addresses look like a real subnet to `scan` (one API
   * port, one web port, the family ports 4433 and 50051 for every host).
   */
  ports?: SimPorts;
  /**
   * How long the Antminer's set_miner_conf.cgi takes to answer (other
   * families ignore it). Default: 30 ms with `fast` (the real firmware takes
   * ~20 s), 1500 ms without; benchmarks use 0 (every device acknowledges at once).
   */
  antminerCgiDelayMs?: number;
}

export interface SimPorts {
  /** The cgminer-family API (4028 on a real miner), and ePIC's HTTP API which lives there. */
  api?: number;
  /** The web UI / HTTP API (80, Auradine 8080). */
  http?: number;
  /** Whatsminer API v3 (4433). */
  v3?: number;
  /** Braiins OS+ gRPC (50051). */
  grpc?: number;
}

/** `{ key: port }` when the role has a fixed port, else nothing (ephemeral). */
function fixed<K extends string>(key: K, port: number | undefined): Partial<Record<K, number>> {
  return port === undefined ? {} : ({ [key]: port } as Record<K, number>);
}

/** What every simulator personality has in common. */
export interface SimulatedMiner {
  readonly power: PowerModel;
  close(): Promise<void>;
}

/** A device block as written in the agent config (`devices[]`). */
export type DeviceBlock = { id: string; driver: string; host: string } & Record<string, unknown>;

export interface StartedSim {
  family: string;
  /** The driver id (registry key, `driver:` in config). */
  driver: string;
  sim: SimulatedMiner;
  host: string;
  /** The device block for this simulator under the given device id. */
  device(id: string): DeviceBlock;
  /** Whether the simulated miner was told to sleep (whatever its draw now). */
  sleeping(): boolean;
  close(): Promise<void>;
}

export interface CatalogEntry {
  /** Family name, equal to its driver id. */
  family: string;
  /** Human name for banners and reports. */
  label: string;
  start(opts?: SimStartOptions): Promise<StartedSim>;
}

/** Password every simulator is started with (not a factory default: those may refuse writes). */
export const SIM_PASSWORD = 'Sim-Pass-7';

export interface Timing {
  sleepDelayMs: number;
  wakeRampMs: number;
}

function timing(o: SimStartOptions): Timing {
  const base = o.fast ? { sleepDelayMs: 150, wakeRampMs: 200 } : { sleepDelayMs: 3000, wakeRampMs: 5000 };
  return { sleepDelayMs: o.timing?.sleepDelayMs ?? base.sleepDelayMs, wakeRampMs: o.timing?.wakeRampMs ?? base.wakeRampMs };
}

/** Keys every driver schema has: confirm polling and deadlines suited to the timings. */
function common(o: SimStartOptions): Record<string, unknown> {
  return { confirmPollMs: o.fast ? 50 : 250, timeouts: { connectMs: 1000, readMs: 3000 } };
}

function vary(o: SimStartOptions, base: number, step = 50): number {
  return base + ((o.index ?? 0) % 4) * step;
}

function started(family: string, host: string, sim: SimulatedMiner, block: (id: string) => Record<string, unknown>): StartedSim {
  return {
    family,
    driver: family,
    sim,
    host,
    device: (id) => ({ id, driver: family, host, ...block(id) }),
    sleeping: () => sim.power.target === 'sleeping',
    close: () => sim.close(),
  };
}

const antminer: CatalogEntry = {
  family: 'antminer',
  label: 'Antminer (stock)',
  async start(o = {}) {
    const username = 'root';
    const sim = new AntminerSim({
      ...timing(o),
      ...(o.host !== undefined ? { host: o.host } : {}),
      ...fixed('apiPort', o.ports?.api),
      ...fixed('webPort', o.ports?.http),
      miningW: vary(o, 3250),
      username,
      password: SIM_PASSWORD,
      // the real CGI answers after ~20 s; enough of a wait here to see it, not to bore
      cgiDelayMs: o.antminerCgiDelayMs ?? (o.fast ? 30 : 1500),
    });
    const { host, apiPort, webPort } = await sim.listen();
    return started('antminer', host, sim, () => ({
      ...common(o),
      port: apiPort,
      webPort,
      username,
      password: SIM_PASSWORD,
      cgi: { ackWaitMs: o.fast ? 300 : 2000 },
    }));
  },
};

const avalon: CatalogEntry = {
  family: 'avalon',
  label: 'Canaan Avalon',
  async start(o = {}) {
    const sim = new AvalonSim({ ...timing(o), ...(o.host !== undefined ? { host: o.host } : {}), ...fixed('port', o.ports?.api), miningW: vary(o, 3730) });
    const { host, port } = await sim.listen();
    return started('avalon', host, sim, () => ({
      ...common(o),
      port,
      // softoff/softon act at a unix time: now + this (tools use 5 s)
      scheduleOffsetS: o.fast ? 0 : 1,
      workLevels: [
        { name: 'eco', level: -1 },
        { name: 'normal', level: 0 },
        { name: 'boost', level: 1 },
      ],
    }));
  },
};

const braiins: CatalogEntry = {
  family: 'braiins',
  label: 'Braiins OS+',
  async start(o = {}) {
    const username = 'root';
    const miningW = vary(o, 3500);
    const sim = new BraiinsSim({ ...timing(o), ...(o.host !== undefined ? { host: o.host } : {}), ...fixed('port', o.ports?.grpc), ...fixed('legacyPort', o.ports?.api), miningW, username, password: SIM_PASSWORD, minPowerW: 1100, maxPowerW: miningW });
    const { host, port, legacyPort } = await sim.listen();
    return started('braiins', host, sim, () => ({
      ...common(o),
      port,
      username,
      password: SIM_PASSWORD,
      apiPort: legacyPort,
      apiFallback: true,
      powerTarget: { minW: 1100, maxW: miningW },
    }));
  },
};

const luxos: CatalogEntry = {
  family: 'luxos',
  label: 'LuxOS',
  async start(o = {}) {
    const sim = new LuxosSim({ ...timing(o), ...(o.host !== undefined ? { host: o.host } : {}), ...fixed('port', o.ports?.api), miningW: vary(o, 3250, 150), hashrateThs: vary(o, 100, 10) });
    const { host, port } = await sim.listen();
    return started('luxos', host, sim, () => ({ ...common(o), port }));
  },
};

const vnish: CatalogEntry = {
  family: 'vnish',
  label: 'Vnish',
  async start(o = {}) {
    const miningW = vary(o, 3250);
    const sim = new VnishSim({ ...timing(o), ...(o.host !== undefined ? { host: o.host } : {}), ...fixed('port', o.ports?.http), miningW, password: SIM_PASSWORD });
    const { host, port } = await sim.listen();
    return started('vnish', host, sim, () => ({ ...common(o), port, password: SIM_PASSWORD, fullPowerW: miningW }));
  },
};

const epic: CatalogEntry = {
  family: 'epic',
  label: 'ePIC PowerPlay',
  async start(o = {}) {
    const miningW = vary(o, 3300);
    const sim = new EpicSim({ ...timing(o), ...(o.host !== undefined ? { host: o.host } : {}), ...fixed('port', o.ports?.api), miningW, password: SIM_PASSWORD, powerTuneMinW: 1000, powerTuneMaxW: miningW });
    const { host, port } = await sim.listen();
    return started('epic', host, sim, () => ({ ...common(o), port, password: SIM_PASSWORD, powerTarget: { minW: 1000, maxW: miningW } }));
  },
};

const auradine: CatalogEntry = {
  family: 'auradine',
  label: 'Auradine',
  async start(o = {}) {
    const username = 'admin';
    const miningW = vary(o, 3500);
    const sim = new AuradineSim({ ...timing(o), ...(o.host !== undefined ? { host: o.host } : {}), ...fixed('port', o.ports?.http), ...fixed('apiPort', o.ports?.api), miningW, user: username, password: SIM_PASSWORD });
    const { host, port, apiPort } = await sim.listen();
    // the simulated custom power mode accepts 1000 W .. miningW
    return started('auradine', host, sim, () => ({ ...common(o), port, apiPort, username, password: SIM_PASSWORD, powerTarget: { minW: 1000, maxW: miningW } }));
  },
};

const whatsminerV2: CatalogEntry = {
  family: 'whatsminer-v2',
  label: 'Whatsminer API v2',
  async start(o = {}) {
    const powerLimitW = vary(o, 3300);
    const sim = new WhatsminerV2Sim({ ...timing(o), ...(o.host !== undefined ? { host: o.host } : {}), ...fixed('port', o.ports?.api), powerLimitW, password: SIM_PASSWORD });
    const { host, port } = await sim.listen();
    return started('whatsminer-v2', host, sim, () => ({ ...common(o), port, password: SIM_PASSWORD, fullPowerW: powerLimitW }));
  },
};

const whatsminerV3: CatalogEntry = {
  family: 'whatsminer-v3',
  label: 'Whatsminer API v3',
  async start(o = {}) {
    const powerLimitW = vary(o, 3500);
    const sim = new WhatsminerV3Sim({ ...timing(o), ...(o.host !== undefined ? { host: o.host } : {}), ...fixed('port', o.ports?.v3), powerLimitW, account: 'super', password: SIM_PASSWORD });
    const { host, port } = await sim.listen();
    return started('whatsminer-v3', host, sim, () => ({ ...common(o), port, username: 'super', password: SIM_PASSWORD, fullPowerW: powerLimitW }));
  },
};

/** Every ASIC family with a simulator, in the order a mixed rack cycles through them. */
export const SIM_CATALOG: readonly CatalogEntry[] = [luxos, antminer, braiins, whatsminerV2, whatsminerV3, avalon, vnish, epic, auradine];

export const SIM_FAMILIES: readonly string[] = SIM_CATALOG.map((e) => e.family);

export function catalogEntry(family: string): CatalogEntry | undefined {
  return SIM_CATALOG.find((e) => e.family === family);
}

/**
 * Resolves a list of family names (e.g. from `--families a,b`) to catalog
 * entries; unknown names are reported all at once, with the known ones.
 */
export function resolveFamilies(names: readonly string[]): { ok: true; entries: CatalogEntry[] } | { ok: false; error: string } {
  const wanted = names.map((n) => n.trim()).filter((n) => n !== '');
  if (wanted.length === 0) return { ok: false, error: `expected at least one family (known: ${SIM_FAMILIES.join(', ')})` };
  const unknown = wanted.filter((n) => !catalogEntry(n));
  if (unknown.length > 0) {
    return { ok: false, error: `unknown famil${unknown.length === 1 ? 'y' : 'ies'} ${unknown.map((n) => `"${n}"`).join(', ')} (known: ${SIM_FAMILIES.join(', ')})` };
  }
  return { ok: true, entries: [...new Set(wanted)].map((n) => catalogEntry(n) as CatalogEntry) };
}

/**
 * Starts `n` simulators, families assigned round-robin over `entries`, with
 * device ids `<family>-NN` (numbered across the rack). On a failure the ones
 * already started are closed.
 */
export async function startMixedRack(n: number, entries: readonly CatalogEntry[] = SIM_CATALOG, opts: Omit<SimStartOptions, 'index'> = {}): Promise<{ sims: StartedSim[]; devices: DeviceBlock[] }> {
  if (entries.length === 0) throw new Error('startMixedRack: no families given');
  const width = Math.max(2, String(n).length);
  const sims: StartedSim[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const entry = entries[i % entries.length] as CatalogEntry;
      sims.push(await entry.start({ ...opts, index: i }));
    }
  } catch (err) {
    await Promise.all(sims.map((s) => s.close()));
    throw err;
  }
  const devices = sims.map((s, i) => s.device(`${s.family}-${String(i + 1).padStart(width, '0')}`));
  return { sims, devices };
}
