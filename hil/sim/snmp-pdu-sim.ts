/**
 * A switched rack PDU over SNMP (v2c and v3) on UDP 127.0.0.1, serving one
 * vendor profile's OIDs (drivers/pdu-snmp/profiles.ts) through net-snmp's own
 * agent: the profile's OID templates become MIB tables, outlets really switch
 * (through the vendor's pending state where it has one), and power follows
 * the load behind each outlet (0 W when off), summed per phase and in total.
 *
 * Faults sit in a UDP relay in front of the agent: `silent` drops requests,
 * `slowMs` delays answers; `rejectWrites` makes switch writes fail with
 * genErr (a Vertiv outlet not in manual mode). A wrong community gets no
 * answer and wrong v3 keys get a report, both from the agent itself; an OID
 * outside the profile gets noSuchObject.
 */
import dgram from 'node:dgram';
import snmp from 'net-snmp';
import { PROFILES, type OutletStateName, type ProfileId, type SnmpPduProfile } from '../../drivers/pdu-snmp/profiles.js';

export interface SimV3User {
  name: string;
  authProtocol?: 'md5' | 'sha' | 'sha256';
  authKey?: string;
  privProtocol?: 'des' | 'aes';
  privKey?: string;
}

export interface SnmpPduSimOptions {
  profile: ProfileId;
  outlets?: number;
  phases?: number;
  /** The read-write community (default "private"). */
  community?: string;
  users?: SimV3User[];
  /** Load behind each outlet in W (default 500 W each). */
  loadsW?: number[];
  /** How long an outlet stays in its pending state before it switches (default 50 ms). */
  transitionMs?: number;
  /** Raritan: decimal digits of the active-power sensors (default 0, as real PX2/PX3 report). */
  powerDigits?: number;
  /** {u} and {c} served (default: the profile's defaults). */
  unit?: number;
  cord?: number;
}

export interface SnmpSimFaults {
  /** Requests are dropped: the PDU does not answer. */
  silent: boolean;
  /** Every answer is delayed this long. */
  slowMs: number;
  /** Switch writes are refused with genErr. */
  rejectWrites: boolean;
}

/** One accepted switch command, as the PDU saw it. */
export interface SimSwitchEvent {
  outlet: number;
  on: boolean;
  at: number;
}

interface Column {
  template: string;
  number: number;
}

interface Table {
  name: string;
  entry: string;
  /** Index tokens: '{u}', '{c}', '{o}', '{p}' or a literal number. */
  tokens: string[];
  columns: Column[];
  rows: number[][];
}

interface AgentLike {
  getMib(): MibLike;
  getAuthorizer(): { addCommunity(c: string): void; addUser(u: Record<string, unknown>): void };
  close(cb?: () => void): void;
}
interface MibLike {
  registerProvider(p: Record<string, unknown>): void;
  addTableRow(name: string, row: number[]): void;
  setTableSingleCell(name: string, column: number, rowIndex: number[], value: number): void;
}
interface MibRequestLike {
  oid: string;
  operation: number;
  setValue?: unknown;
  /** net-snmp runs set handlers twice: a test pass, then a commit pass. */
  testSet?: boolean;
  commitSet?: boolean;
  done(err?: { errorStatus: number }): void;
}

const AUTH = { md5: snmp.AuthProtocols.md5, sha: snmp.AuthProtocols.sha, sha256: snmp.AuthProtocols.sha256 };
const PRIV = { des: snmp.PrivProtocols.des, aes: snmp.PrivProtocols.aes };

function splitTemplate(t: string): { column: string; tokens: string[] } {
  const parts = t.split('.');
  const first = parts.findIndex((p) => p.startsWith('{'));
  return { column: parts.slice(0, first).join('.'), tokens: parts.slice(first) };
}

export class SnmpPduSim {
  readonly profile: SnmpPduProfile;
  readonly faults: SnmpSimFaults = { silent: false, slowMs: 0, rejectWrites: false };
  /** Every accepted switch command, in order. */
  readonly switches: SimSwitchEvent[] = [];
  /** SNMP requests relayed to the agent. */
  requests = 0;
  /** The UDP port clients talk to (0 until listen()). */
  port = 0;
  private readonly outlets: number;
  private readonly phases: number;
  private readonly unit: number;
  private readonly cord: number;
  private readonly loads: number[];
  private readonly states: OutletStateName[];
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly tables: Table[] = [];
  private agent: AgentLike | undefined;
  private front: dgram.Socket | undefined;
  private readonly upstreams = new Map<string, dgram.Socket>();

  constructor(private readonly opts: SnmpPduSimOptions) {
    this.profile = PROFILES[opts.profile];
    this.outlets = opts.outlets ?? 8;
    this.phases = opts.phases ?? 3;
    this.unit = opts.unit ?? this.profile.defaults.unit;
    this.cord = opts.cord ?? this.profile.defaults.cord;
    this.loads = Array.from({ length: this.outlets }, (_, i) => opts.loadsW?.[i] ?? 500);
    this.states = Array.from({ length: this.outlets }, () => 'on' as const);
    this.buildTables();
  }

  /** The outlet's state as the PDU sees it. */
  outletState(outlet: number): OutletStateName {
    return this.states[outlet - 1] ?? 'off';
  }

  /** Sets the load behind an outlet (drawn only while it is on). */
  setLoad(outlet: number, watts: number): void {
    this.loads[outlet - 1] = watts;
    this.refresh();
  }

  /** Forces an outlet state (test setup). */
  forceState(outlet: number, state: OutletStateName): void {
    this.states[outlet - 1] = state;
    this.refresh();
  }

  private phaseOf(outlet: number): number {
    return this.phases === 0 ? 1 : ((outlet - 1) % this.phases) + 1;
  }

  private outletW(o: number): number {
    const s = this.outletState(o);
    return s === 'on' || s === 'pendingOff' ? (this.loads[o - 1] ?? 0) : 0;
  }

  private rawPower(watts: number, scale: number): number {
    const d = this.opts.powerDigits ?? 0;
    return Math.round((watts / scale) * (this.profile.totalPower.digitsOid ? 10 ** d : 1));
  }

  /** The value of one cell: its column template and its row's {o}/{p}. */
  private cellValue(template: string, o: number, p: number): number {
    const pr = this.profile;
    const digits = this.opts.powerDigits ?? 0;
    if (template === pr.totalPower.oid) {
      let w = 0;
      for (let i = 1; i <= this.outlets; i++) w += this.outletW(i);
      return this.rawPower(w, pr.totalPower.scale);
    }
    if (pr.phasePower && template === pr.phasePower.oid) {
      let w = 0;
      for (let i = 1; i <= this.outlets; i++) if (this.phaseOf(i) === p) w += this.outletW(i);
      return this.rawPower(w, pr.phasePower.scale);
    }
    if (pr.outletPower && template === pr.outletPower.oid) return this.rawPower(this.outletW(o), pr.outletPower.scale);
    if (template === pr.totalPower.digitsOid || template === pr.phasePower?.digitsOid || template === pr.outletPower?.digitsOid) return digits;
    if (template === pr.outletState.oid) return pr.outletState.values[this.outletState(o)]?.[0] ?? 0;
    // a command column reads back as "nothing pending": Eaton -1, others 0
    return pr.id === 'eaton-epdu' ? -1 : 0;
  }

  private buildTables(): void {
    const pr = this.profile;
    const templates = [
      pr.totalPower.oid,
      pr.totalPower.digitsOid,
      pr.phasePower?.oid,
      pr.phasePower?.digitsOid,
      pr.outletPower?.oid,
      pr.outletPower?.digitsOid,
      pr.outletState.oid,
      pr.switchOn.oid,
      pr.switchOff.oid,
    ].filter((t): t is string => t !== undefined);
    for (const t of new Set(templates)) {
      const { column, tokens } = splitTemplate(t);
      const arcs = column.split('.');
      const entry = arcs.slice(0, -1).join('.');
      let table = this.tables.find((x) => x.entry === entry);
      if (!table) {
        table = { name: `t${this.tables.length}`, entry, tokens, columns: [], rows: [] };
        this.tables.push(table);
      }
      table.columns.push({ template: t, number: Number(arcs[arcs.length - 1]) });
    }
    for (const table of this.tables) {
      let rows: number[][] = [[]];
      for (const tok of table.tokens) {
        const values =
          tok === '{u}' ? [this.unit] : tok === '{c}' ? [this.cord] : tok === '{o}' ? range(this.outlets) : tok === '{p}' ? range(Math.max(1, this.phases)) : [Number(tok)];
        rows = rows.flatMap((r) => values.map((v) => [...r, v]));
      }
      table.rows = rows;
    }
  }

  private rowParams(table: Table, row: number[]): { o: number; p: number } {
    const oi = table.tokens.indexOf('{o}');
    const pi = table.tokens.indexOf('{p}');
    return { o: oi < 0 ? 0 : (row[oi] ?? 0), p: pi < 0 ? 0 : (row[pi] ?? 0) };
  }

  /** Recomputes every read-only cell (power, state). */
  private refresh(): void {
    const mib = this.agent?.getMib();
    if (!mib) return;
    const writes = new Set([this.profile.switchOn.oid, this.profile.switchOff.oid]);
    for (const t of this.tables) {
      for (const row of t.rows) {
        const { o, p } = this.rowParams(t, row);
        for (const c of t.columns) if (!writes.has(c.template)) mib.setTableSingleCell(t.name, c.number, row, this.cellValue(c.template, o, p));
      }
    }
  }

  async listen(): Promise<{ host: string; port: number }> {
    const community = this.opts.community ?? 'private';
    // net-snmp turns port 0 into 161: hand it a dgram module whose sockets bind an ephemeral port instead
    let agentSocket: dgram.Socket | undefined;
    const dgramModule = {
      createSocket: (type: dgram.SocketType): dgram.Socket => {
        const sock = dgram.createSocket(type);
        const bind = sock.bind.bind(sock) as (port: number, address: string) => dgram.Socket;
        (sock as unknown as { bind: (port: number, address: string) => dgram.Socket }).bind = (_port, address) => bind(0, address);
        agentSocket = sock;
        return sock;
      },
    };
    const agent = snmp.createAgent({ port: 1, address: '127.0.0.1', transport: 'udp4', dgramModule }, () => undefined) as AgentLike;
    this.agent = agent;
    const auth = agent.getAuthorizer();
    auth.addCommunity(community);
    for (const u of this.opts.users ?? []) {
      const level = u.privKey ? snmp.SecurityLevel.authPriv : u.authKey ? snmp.SecurityLevel.authNoPriv : snmp.SecurityLevel.noAuthNoPriv;
      auth.addUser({
        name: u.name,
        level,
        ...(u.authKey ? { authProtocol: AUTH[u.authProtocol ?? 'sha'], authKey: u.authKey } : {}),
        ...(u.privKey ? { privProtocol: PRIV[u.privProtocol ?? 'aes'], privKey: u.privKey } : {}),
      });
    }
    const mib = agent.getMib();
    const writes = new Set([this.profile.switchOn.oid, this.profile.switchOff.oid]);
    for (const t of this.tables) {
      const writable = t.columns.some((c) => writes.has(c.template));
      mib.registerProvider({
        name: t.name,
        type: snmp.MibProviderType.Table,
        oid: t.entry,
        maxAccess: writable ? snmp.MaxAccess['read-write'] : snmp.MaxAccess['read-only'],
        tableColumns: [
          ...t.tokens.map((_, i) => ({ number: 200 + i, name: `${t.name}i${i}`, type: snmp.ObjectType.Integer, maxAccess: snmp.MaxAccess['not-accessible'] })),
          ...t.columns.map((c) => ({
            number: c.number,
            name: `${t.name}c${c.number}`,
            type: snmp.ObjectType.Integer,
            maxAccess: writes.has(c.template) ? snmp.MaxAccess['read-write'] : snmp.MaxAccess['read-only'],
          })),
        ],
        tableIndex: t.tokens.map((_, i) => ({ columnName: `${t.name}i${i}` })),
        ...(writable ? { handler: (req: MibRequestLike) => this.onRequest(t, req) } : {}),
      });
      for (const row of t.rows) {
        const { o, p } = this.rowParams(t, row);
        mib.addTableRow(t.name, [...row, ...t.columns.map((c) => this.cellValue(c.template, o, p))]);
      }
    }
    const agentPort = await boundPort(agentSocket);
    const front = dgram.createSocket('udp4');
    this.front = front;
    front.on('message', (msg, rinfo) => this.relay(msg, rinfo, agentPort));
    await new Promise<void>((resolve, reject) => {
      front.once('error', reject);
      front.bind(0, '127.0.0.1', () => resolve());
    });
    this.port = front.address().port;
    return { host: '127.0.0.1', port: this.port };
  }

  private relay(msg: Buffer, rinfo: dgram.RemoteInfo, agentPort: number): void {
    if (this.faults.silent) return;
    this.requests++;
    const key = `${rinfo.address}:${rinfo.port}`;
    let up = this.upstreams.get(key);
    if (!up) {
      const sock = dgram.createSocket('udp4');
      sock.on('error', () => undefined);
      sock.on('message', (reply) => {
        const send = (): void => {
          if (!this.front || this.faults.silent) return;
          this.front.send(reply, rinfo.port, rinfo.address);
        };
        if (this.faults.slowMs > 0) this.later(this.faults.slowMs, send);
        else send();
      });
      this.upstreams.set(key, sock);
      up = sock;
    }
    up.send(msg, agentPort, '127.0.0.1');
  }

  private later(ms: number, fn: () => void): void {
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, ms);
    this.timers.add(t);
  }

  /** Set requests on a table with a command column: switch, or refuse. */
  private onRequest(t: Table, req: MibRequestLike): void {
    if (req.operation !== snmp.PduType.SetRequest) {
      req.done();
      return;
    }
    const suffix = req.oid.slice(t.entry.length + 1).split('.').map(Number);
    const [colNumber, ...row] = suffix;
    const col = t.columns.find((c) => c.number === colNumber);
    const value = Number(req.setValue);
    const pr = this.profile;
    let on: boolean | undefined;
    if (col?.template === pr.switchOn.oid && (pr.id === 'eaton-epdu' ? value >= 0 : value === pr.switchOn.value)) on = true;
    else if (col?.template === pr.switchOff.oid && (pr.id === 'eaton-epdu' ? value >= 0 : value === pr.switchOff.value)) on = false;
    if (on === undefined) {
      req.done();
      return;
    }
    if (this.faults.rejectWrites) {
      req.done({ errorStatus: snmp.ErrorStatus.GeneralError });
      return;
    }
    if (req.testSet) {
      // validation pass: the switch happens in the commit pass
      req.done();
      return;
    }
    const { o } = this.rowParams(t, row);
    this.switches.push({ outlet: o, on, at: Date.now() });
    const delayS = pr.id === 'eaton-epdu' ? value : 0;
    this.startSwitch(o, on, delayS * 1000);
    req.done();
  }

  private startSwitch(o: number, on: boolean, extraMs: number): void {
    const target: OutletStateName = on ? 'on' : 'off';
    if (this.outletState(o) === target) return;
    const delay = (this.opts.transitionMs ?? 50) + extraMs;
    if (delay <= 0) {
      this.states[o - 1] = target;
      this.refresh();
      return;
    }
    const pending: OutletStateName = on ? 'pendingOn' : 'pendingOff';
    if (this.profile.outletState.values[pending]) this.states[o - 1] = pending;
    this.refresh();
    this.later(delay, () => {
      this.states[o - 1] = target;
      this.refresh();
    });
  }

  async close(): Promise<void> {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    for (const s of this.upstreams.values()) s.close();
    this.upstreams.clear();
    const front = this.front;
    this.front = undefined;
    if (front) await new Promise<void>((r) => front.close(() => r()));
    const agent = this.agent;
    this.agent = undefined;
    if (agent) agent.close();
  }
}

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i + 1);
}

/** The port an agent socket bound (it binds asynchronously). */
async function boundPort(sock: dgram.Socket | undefined): Promise<number> {
  if (!sock) throw new Error('net-snmp agent created no socket');
  for (let i = 0; i < 400; i++) {
    try {
      const port = sock.address().port;
      if (port > 0) return port;
    } catch {
      // not bound yet
    }
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error('net-snmp agent did not bind');
}
