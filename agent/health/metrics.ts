/**
 * Prometheus metrics of one agent, on a registry of its own (several agents
 * may share a process; the prom-client default registry is never used), plus
 * the process's own metrics.
 * Almost everything is read at scrape time by `collect()` callbacks from the
 * agent's public state, so the curtailment path pays nothing; only the poll
 * cycle duration (once per cycle) and command results (once per result) are
 * pushed. Metric names: agent/health/README.md.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { DEVICE_STATES, type Reading } from '../../drivers/contract.js';
import { COMMAND_NAMES, COMMAND_STATUSES, DEMAND_SOURCES, RACK_STATES, type CommandResult } from '../../protocol/messages.js';
import { isActive } from '../engine/demands.js';
import type { CycleStats } from '../poller.js';
import { spoolStats, type HealthSources } from './sources.js';

/**
 * Process and Node.js metrics (prom-client's default collectors: CPU, memory,
 * handles, GC, event-loop lag) describe the process, not an agent: one
 * registry per process, created on first use and added to every agent's
 * scrape. Each collectDefaultMetrics() call leaves an event-loop monitor and a
 * GC observer running for good, so it must not run once per agent.
 */
let processRegistry: Registry | undefined;

function processMetrics(): Registry {
  if (!processRegistry) {
    processRegistry = new Registry();
    collectDefaultMetrics({ register: processRegistry });
  }
  return processRegistry;
}

const POLL_BUCKETS_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
const KNOWN_COMMANDS: ReadonlySet<string> = new Set(COMMAND_NAMES);

export class AgentMetrics {
  readonly registry = new Registry();
  private readonly commandResults: Counter<'command' | 'status'>;
  private readonly pollCycle: Histogram;

  constructor(
    private readonly s: HealthSources,
    private readonly ready: () => boolean,
  ) {
    const registers = [this.registry];
    processMetrics();

    this.commandResults = new Counter({
      name: 'rackpilot_command_results_total',
      help: 'Command results sent to central control, by command (other: unknown or unparsable) and status.',
      labelNames: ['command', 'status'],
      registers,
    });
    for (const command of COMMAND_NAMES) for (const status of COMMAND_STATUSES) this.commandResults.inc({ command, status }, 0);
    this.pollCycle = new Histogram({
      name: 'rackpilot_poll_cycle_duration_seconds',
      help: 'Duration of one telemetry poll cycle over every device.',
      buckets: POLL_BUCKETS_S,
      registers,
    });

    this.agentMetrics(registers);
    this.deviceMetrics(registers);
    this.curtailmentMetrics(registers);
    this.mqttMetrics(registers);
    this.spoolMetrics(registers);
  }

  /** Once per poll cycle (the poller's CycleStats). */
  observeCycle(stats: CycleStats): void {
    this.pollCycle.observe(stats.durationMs / 1000);
  }

  /** Once per command result sent. */
  onResult(r: Pick<CommandResult, 'command' | 'status'>): void {
    const command = r.command !== null && KNOWN_COMMANDS.has(r.command) ? r.command : 'other';
    this.commandResults.inc({ command, status: r.status });
  }

  /** The exposition text (process metrics, then this agent's) and its content type. */
  async scrape(): Promise<{ contentType: string; body: string }> {
    const parts = await Promise.all([processMetrics().metrics(), this.registry.metrics()]);
    return { contentType: this.registry.contentType, body: parts.map((p) => (p.endsWith('\n') ? p : `${p}\n`)).join('') };
  }

  private agentMetrics(registers: Registry[]): void {
    const s = this.s;
    const info = new Gauge({ name: 'rackpilot_agent_info', help: 'Always 1; labels: agent version, site and rack.', labelNames: ['version', 'site', 'rack'], registers });
    info.set({ version: s.version, site: s.site, rack: s.rack }, 1);
    const ready = this.ready;
    new Gauge({
      name: 'rackpilot_agent_ready',
      help: '1 once the agent has started (0 while starting or stopping).',
      registers,
      collect() {
        this.set(ready() ? 1 : 0);
      },
    });
  }

  private deviceMetrics(registers: Registry[]): void {
    const s = this.s;
    const labelNames = ['device', 'kind'] as const;
    // each metric reads the latest readings in its own collect(): prom-client serializes a metric right after its collect
    const perDevice = (name: string, help: string, value: (r: Reading | undefined, now: number) => number | undefined): void => {
      new Gauge({
        name,
        help,
        labelNames,
        registers,
        collect() {
          this.reset();
          const now = Date.now();
          for (const d of s.devices) {
            const v = value(s.latest.get(d.id), now);
            if (v !== undefined) this.set({ device: d.id, kind: d.kind }, v);
          }
        },
      });
    };
    perDevice('rackpilot_device_power_watts', 'Power of each device from its latest fresh reading (absent when not fresh or not reported).', (r) =>
      r?.freshness === 'fresh' && r.powerW !== null && Number.isFinite(r.powerW) ? r.powerW : undefined,
    );
    perDevice('rackpilot_device_up', '1 when the device answered its last read.', (r) => (r?.online === true ? 1 : 0));
    perDevice('rackpilot_device_fresh', '1 when the device was read in the last poll cycle (its values are current).', (r) => (r?.freshness === 'fresh' ? 1 : 0));
    perDevice('rackpilot_device_reading_age_seconds', "Age of the device's latest values (absent: never read).", (r, now) => (r ? Math.max(0, now - r.ts) / 1000 : undefined));
    new Gauge({
      name: 'rackpilot_device_read_duration_seconds',
      help: "Duration of the device's latest poll read (absent: not polled yet).",
      labelNames,
      registers,
      collect() {
        this.reset();
        for (const d of s.devices) {
          const ms = s.readMs.get(d.id);
          if (ms !== undefined) this.set({ device: d.id, kind: d.kind }, ms / 1000);
        }
      },
    });
    new Gauge({
      name: 'rackpilot_device_state',
      help: 'Device state as a state set: 1 for the current state, 0 for the others.',
      labelNames: ['device', 'kind', 'state'],
      registers,
      collect() {
        this.reset();
        for (const d of s.devices) {
          const current = s.latest.get(d.id)?.state ?? 'unknown';
          for (const state of DEVICE_STATES) this.set({ device: d.id, kind: d.kind, state }, state === current ? 1 : 0);
        }
      },
    });
  }

  private curtailmentMetrics(registers: Registry[]): void {
    const s = this.s;
    new Gauge({
      name: 'rackpilot_rack_state',
      help: 'Rack curtailment state as a state set: 1 for the current state, 0 for the others.',
      labelNames: ['state'],
      registers,
      collect() {
        const current = s.rackState();
        for (const state of RACK_STATES) this.set({ state }, state === current ? 1 : 0);
      },
    });
    new Gauge({
      name: 'rackpilot_demands_active',
      help: 'Demands holding load down now, by source.',
      labelNames: ['source'],
      registers,
      collect() {
        const now = Date.now();
        const counts = new Map<string, number>(DEMAND_SOURCES.map((x) => [x, 0]));
        for (const d of s.engine.demands.list()) if (isActive(d, now)) counts.set(d.source, (counts.get(d.source) ?? 0) + 1);
        for (const [source, n] of counts) this.set({ source }, n);
      },
    });
    new Gauge({
      name: 'rackpilot_shed_devices',
      help: 'Devices the engine holds curtailed (or cut) now.',
      registers,
      collect() {
        this.set(s.engine.shed.size);
      },
    });
  }

  private mqttMetrics(registers: Registry[]): void {
    const b = this.s.bridge;
    new Gauge({
      name: 'rackpilot_mqtt_connected',
      help: '1 while connected to the MQTT broker.',
      registers,
      collect() {
        this.set(b.connected ? 1 : 0);
      },
    });
    new Gauge({
      name: 'rackpilot_mqtt_queued_messages',
      help: 'Results, events, status and state waiting in memory to be sent.',
      registers,
      collect() {
        this.set(b.queued);
      },
    });
    const counters: [string, string, keyof typeof b.stats][] = [
      ['rackpilot_mqtt_connects_total', 'Successful connections to the broker (the first one included).', 'connects'],
      ['rackpilot_mqtt_messages_dropped_total', 'Messages dropped: in-memory queue overflow, telemetry while offline without a spool, or refused by the broker.', 'dropped'],
      ['rackpilot_mqtt_publish_failures_total', 'Publishes that failed or timed out on a live connection.', 'publishFailures'],
      ['rackpilot_mqtt_messages_spooled_total', 'Telemetry and events handed to the spool (broker unreachable, or a live send failed).', 'spooled'],
      ['rackpilot_mqtt_spool_refused_total', 'Messages the spool refused (full of events, or too large).', 'spoolRefused'],
      ['rackpilot_mqtt_messages_replayed_total', 'Spooled messages replayed after a reconnect.', 'replayed'],
    ];
    for (const [name, help, key] of counters) counterFrom(registers, name, help, () => b.stats[key]);
  }

  private spoolMetrics(registers: Registry[]): void {
    const s = this.s;
    new Gauge({
      name: 'rackpilot_spool_pending_messages',
      help: 'Spooled messages not yet acknowledged by the broker, by class (absent while the spool is not open).',
      labelNames: ['class'],
      registers,
      collect() {
        this.reset();
        const st = spoolStats(s);
        if (!st) return;
        this.set({ class: 'telemetry' }, st.pending.telemetry);
        this.set({ class: 'event' }, st.pending.events);
      },
    });
    new Gauge({
      name: 'rackpilot_spool_open',
      help: '1 while the store-and-forward spool is open (0: starting, or unusable: messages published offline are dropped).',
      registers,
      collect() {
        this.set(spoolStats(s) ? 1 : 0);
      },
    });
    new Gauge({
      name: 'rackpilot_spool_disk_bytes',
      help: 'Bytes of spool segment files on disk (0 while the spool is not open).',
      registers,
      collect() {
        this.set(spoolStats(s)?.diskBytes ?? 0);
      },
    });
    counterFrom(registers, 'rackpilot_spool_telemetry_dropped_total', 'Spooled telemetry dropped to stay within spool.maxBytes (oldest first).', () => spoolStats(s)?.telemetryDropped ?? 0);
    counterFrom(registers, 'rackpilot_spool_write_errors_total', 'Spool batches that could not be written.', () => spoolStats(s)?.writeErrors ?? 0);
  }
}

/** A counter mirroring a monotonic count kept elsewhere, read at scrape time. */
function counterFrom(registers: Registry[], name: string, help: string, read: () => number): void {
  new Counter({
    name,
    help,
    registers,
    collect() {
      this.reset();
      this.inc(read());
    },
  });
}
