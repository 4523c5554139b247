/**
 * A switched PDU over Modbus TCP (modbus-serial's ServerTCP on 127.0.0.1):
 * outlets really switch (after `transitionMs`), outlet power follows the load
 * behind each outlet (0 W when off), phases and total are sums. Two map
 * styles, both described by `modbusPduSimMap()` in the driver's config shape:
 *   coil:     outlet state and command are coil o-1
 *   register: state in holding 200+o-1 (1 on, 0 off), command in holding 300+o-1 (1 on, 2 off)
 * Power: total in holding 0-1 (uint32, W, big-endian words), phase p in
 * holding 2p..2p+1 (uint32, W), outlet o in holding 100+2(o-1) (float32, W).
 * Faults: `silent` (no answer), `slowMs`, `rejectWrites` (exception 4, server
 * device failure); a wrong unit id gets no answer; unmapped addresses get
 * exception 2 (illegal data address).
 */
import { ServerTCP } from 'modbus-serial';
import { freePort } from '../testing/ports.js';
import { encodeRegisters } from '../../drivers/pdu-modbus/registers.js';
import type { RegisterValue } from '../../drivers/pdu-modbus/schema.js';

export type ModbusPduSimMode = 'coil' | 'register';

export interface ModbusPduSimOptions {
  mode?: ModbusPduSimMode;
  outlets?: number;
  phases?: number;
  unitId?: number;
  loadsW?: number[];
  transitionMs?: number;
}

const TOTAL: RegisterValue = { table: 'holding', address: 0, type: 'uint32', scale: 1, wordOrder: 'big' };
const phaseReg = (p: number): RegisterValue => ({ table: 'holding', address: 2 * p, type: 'uint32', scale: 1, wordOrder: 'big' });
const outletReg = (o: number): RegisterValue => ({ table: 'holding', address: 100 + 2 * (o - 1), type: 'float32', scale: 1, wordOrder: 'big' });

/** The register/coil map of the simulator, as the pdu-modbus config keys `totalPower`, `phasePower`, `outlets`. */
export function modbusPduSimMap(mode: ModbusPduSimMode = 'coil', outlets = 8, phases = 3) {
  return {
    totalPower: { address: 0, type: 'uint32' as const },
    phasePower: Array.from({ length: phases }, (_, i) => ({ address: 2 * (i + 1), type: 'uint32' as const })),
    outlets: Array.from({ length: outlets }, (_, i) =>
      mode === 'coil'
        ? { state: { coil: i }, power: { address: 100 + 2 * i, type: 'float32' as const } }
        : { state: { register: 200 + i }, command: { register: 300 + i, on: 1, off: 2 }, power: { address: 100 + 2 * i, type: 'float32' as const } },
    ),
  };
}

const modbusError = (code: number) => Object.assign(new Error(`modbus exception ${code}`), { modbusErrorCode: code });

export class ModbusPduSim {
  readonly faults = { silent: false, slowMs: 0, rejectWrites: false };
  /** Every accepted switch command, in order. */
  readonly switches: { outlet: number; on: boolean; at: number }[] = [];
  requests = 0;
  private readonly mode: ModbusPduSimMode;
  private readonly n: number;
  private readonly phases: number;
  private readonly loads: number[];
  private readonly on: boolean[];
  private readonly timers = new Set<NodeJS.Timeout>();
  private server: ServerTCP | undefined;

  constructor(private readonly opts: ModbusPduSimOptions = {}) {
    this.mode = opts.mode ?? 'coil';
    this.n = opts.outlets ?? 8;
    this.phases = opts.phases ?? 3;
    this.loads = Array.from({ length: this.n }, (_, i) => opts.loadsW?.[i] ?? 500);
    this.on = Array.from({ length: this.n }, () => true);
  }

  outletOn(o: number): boolean {
    return this.on[o - 1] ?? false;
  }

  setLoad(o: number, watts: number): void {
    this.loads[o - 1] = watts;
  }

  private outletW(o: number): number {
    return this.outletOn(o) ? (this.loads[o - 1] ?? 0) : 0;
  }

  private holding(addr: number): number {
    const word = (v: RegisterValue, w: number): number | undefined => {
      const off = addr - v.address;
      return off >= 0 && off < 2 ? encodeRegisters(w, v)[off] : undefined;
    };
    let total = 0;
    for (let o = 1; o <= this.n; o++) total += this.outletW(o);
    const t = word(TOTAL, total);
    if (t !== undefined) return t;
    for (let p = 1; p <= this.phases; p++) {
      let w = 0;
      for (let o = p; o <= this.n; o += this.phases) w += this.outletW(o);
      const v = word(phaseReg(p), w);
      if (v !== undefined) return v;
    }
    for (let o = 1; o <= this.n; o++) {
      const v = word(outletReg(o), this.outletW(o));
      if (v !== undefined) return v;
    }
    if (this.mode === 'register' && addr >= 200 && addr < 200 + this.n) return this.outletOn(addr - 199) ? 1 : 0;
    if (this.mode === 'register' && addr >= 300 && addr < 300 + this.n) return 0;
    throw modbusError(2);
  }

  /** Answers after the fault delays; `silent` never answers. */
  private answer<T>(fn: () => T): Promise<T> {
    this.requests++;
    if (this.faults.silent) return new Promise<T>(() => undefined);
    return new Promise<T>((resolve, reject) => {
      const run = (): void => {
        try {
          resolve(fn());
        } catch (err) {
          reject(err instanceof Error ? err : new Error(String(err)));
        }
      };
      if (this.faults.slowMs > 0) {
        const t = setTimeout(() => {
          this.timers.delete(t);
          run();
        }, this.faults.slowMs);
        this.timers.add(t);
      } else run();
    });
  }

  private command(o: number, on: boolean): void {
    if (this.faults.rejectWrites) throw modbusError(4);
    this.switches.push({ outlet: o, on, at: Date.now() });
    const t = setTimeout(() => {
      this.timers.delete(t);
      this.on[o - 1] = on;
    }, this.opts.transitionMs ?? 30);
    this.timers.add(t);
  }

  async listen(): Promise<{ host: string; port: number }> {
    for (let attempt = 0; ; attempt++) {
      const port = await freePort();
      try {
        await this.start(port);
        return { host: '127.0.0.1', port };
      } catch (err) {
        if (attempt >= 3) throw err;
      }
    }
  }

  private start(port: number): Promise<void> {
    const coilOk = (a: number) => this.mode === 'coil' && a >= 0 && a < this.n;
    const vector = {
      getCoil: (a: number) => this.answer(() => {
        if (!coilOk(a)) throw modbusError(2);
        return this.outletOn(a + 1);
      }),
      setCoil: (a: number, v: boolean) => this.answer(() => {
        if (!coilOk(a)) throw modbusError(2);
        this.command(a + 1, v);
      }),
      getHoldingRegister: (a: number) => this.answer(() => this.holding(a)),
      getInputRegister: () => this.answer(() => {
        throw modbusError(2);
      }),
      setRegister: (a: number, v: number) => this.answer(() => {
        if (this.mode !== 'register' || a < 300 || a >= 300 + this.n) throw modbusError(2);
        if (v !== 1 && v !== 2) throw modbusError(3);
        this.command(a - 299, v === 1);
      }),
    };
    return new Promise<void>((resolve, reject) => {
      const server = new ServerTCP(vector, { host: '127.0.0.1', port, unitID: this.opts.unitId ?? 1 });
      server.on('serverError', (err: Error | null) => reject(err ?? new Error('modbus server error')));
      server.on('socketError', () => undefined);
      server.on('initialized', () => {
        this.server = server;
        resolve();
      });
    });
  }

  async close(): Promise<void> {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    const s = this.server;
    this.server = undefined;
    if (!s) return;
    for (const sock of s.socks.keys()) sock.destroy();
    await new Promise<void>((r) => s.close(() => r()));
  }
}
