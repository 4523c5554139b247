/**
 * `rackpilot run`: the agent as a supervised service. Starts the agent,
 * tells systemd it is ready, pings the watchdog from the event loop, reloads
 * the config on SIGHUP and stops cleanly on SIGTERM/SIGINT.
 *
 * Reload: the new file is validated first; a file with errors (or TLS files
 * that cannot be loaded) is rejected with every error logged, and the running
 * agent is kept untouched. A change of `log.level` alone is applied in place.
 * Any other change replaces the agent the way Telegraf does: the old one
 * stops (devices are left as they are: a stop never restores load), the new
 * one starts and, like after a restart, re-asserts the curtailment in force
 * from the persisted state before anything else; level-triggered signals (a
 * relay contact still closed) are re-read at its start. The gap is the new
 * agent's start-up time (devices' start deadlines): a signal edge inside it
 * is acted on at the new start, never lost. If the new agent fails to start,
 * the previous config is started again.
 */
import { isDeepStrictEqual } from 'node:util';
import type { Logger } from 'pino';
import { Agent } from './agent.js';
import { loadConfigFile, type AgentConfig } from './config.js';
import { SystemdNotifier } from './systemd/notify.js';

export type ReloadOutcome =
  | { outcome: 'unchanged' }
  | { outcome: 'log-level'; level: string }
  | { outcome: 'replaced' }
  | { outcome: 'rejected'; errors: string[] }
  | { outcome: 'failed'; error: string }
  | { outcome: 'skipped'; why: string };

export interface ServiceOptions {
  configPath: string;
  config: AgentConfig;
  log: Logger;
  /** --log-level on the command line: wins over the file's log.level, across reloads too. */
  logLevelOverride?: string;
  notifier?: SystemdNotifier;
  /**
   * Called when no agent runs any more and none could be started again (a
   * reload whose fallback failed too): the process should exit non-zero so
   * systemd restarts it. The watchdog pings have stopped by then.
   */
  onFatal?: (err: unknown) => void;
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export class Service {
  private agentNow: Agent;
  private config: AgentConfig;
  private readonly notifier: SystemdNotifier;
  private readonly log: Logger;
  /** Reloads and the stop run one at a time, in arrival order. */
  private queue: Promise<unknown> = Promise.resolve();
  private stopped = false;
  /** Set the moment a stop is asked for: reloads queued or running give way to it. */
  private stopRequested = false;
  /** An agent is running (started, and not stopped by a reload that has not started its successor yet). */
  private running = false;
  private startFailed = false;

  constructor(private readonly o: ServiceOptions) {
    this.config = o.config;
    this.log = o.log;
    this.notifier = o.notifier ?? new SystemdNotifier({ log: o.log.child({ component: 'systemd' }) });
    this.agentNow = new Agent(o.config, o.log);
  }

  get agent(): Agent {
    return this.agentNow;
  }

  /** Starts the agent, then READY=1 and the watchdog pings. A SIGHUP during start-up waits for it. */
  start(): Promise<void> {
    return this.enqueue(async () => {
      try {
        await this.agentNow.start();
      } catch (err) {
        this.startFailed = true;
        throw err;
      }
      this.running = true;
      this.notifier.ready(this.statusLine());
      this.notifier.startWatchdog();
      this.log.info({ config: this.o.configPath, watchdogMs: this.notifier.watchdogMs, notify: this.notifier.enabled }, 'agent running');
    });
  }

  /** Re-reads the config file (SIGHUP). Never throws; the outcome says what happened. */
  reload(): Promise<ReloadOutcome> {
    return this.enqueue(() => this.doReload());
  }

  stop(): Promise<void> {
    this.stopRequested = true;
    return this.enqueue(async () => {
      if (this.stopped) return;
      this.stopped = true;
      this.notifier.stopping();
      this.notifier.stopWatchdog();
      try {
        // a start that failed half-way still has devices, sockets and an endpoint to close
        if (this.running || this.startFailed) await this.agentNow.stop();
        this.running = false;
      } finally {
        this.notifier.close();
      }
    });
  }

  /** Runs `task` after everything queued before it; a failure is the caller's and does not block the queue. */
  private enqueue<T>(task: () => Promise<T>): Promise<T> {
    const next = this.queue.then(task);
    this.queue = next.catch(() => undefined);
    return next;
  }

  private async doReload(): Promise<ReloadOutcome> {
    if (this.stopRequested || this.stopped) return { outcome: 'skipped', why: 'stopping' };
    if (this.startFailed) return { outcome: 'skipped', why: 'the agent did not start' };
    this.notifier.reloading();
    let outcome: ReloadOutcome;
    try {
      outcome = await this.applyReload();
    } catch (err) {
      // neither the new config nor the previous one could be started again
      this.log.fatal({ error: message(err) }, 'reload: no agent could be started; exiting so that systemd restarts the service');
      this.notifier.stopWatchdog();
      this.notifier.status(`reload failed and no agent runs: ${message(err)}`);
      this.o.onFatal?.(err);
      return { outcome: 'failed', error: message(err) };
    }
    const summary =
      outcome.outcome === 'rejected'
        ? `last reload rejected (${outcome.errors.length} error(s)); running the previous config`
        : outcome.outcome === 'failed'
          ? `last reload failed (${outcome.error}); running the previous config`
          : this.statusLine();
    this.notifier.ready(summary);
    return outcome;
  }

  private async applyReload(): Promise<ReloadOutcome> {
    const path = this.o.configPath;
    const res = loadConfigFile(path);
    if (!res.ok) {
      this.log.error({ config: path, errors: res.errors }, 'reloaded config rejected: the running config is kept');
      return { outcome: 'rejected', errors: res.errors };
    }
    const next = res.config;
    if (isDeepStrictEqual(next, this.config)) {
      this.log.info({ config: path }, 'config reloaded: no change');
      return { outcome: 'unchanged' };
    }
    if (isDeepStrictEqual({ ...next, log: this.config.log }, this.config)) {
      this.config = next;
      const level = this.o.logLevelOverride ?? next.log.level;
      this.log.level = level;
      this.log.info({ level }, 'config reloaded: log level applied');
      return { outcome: 'log-level', level };
    }
    let fresh: Agent;
    try {
      fresh = new Agent(next, this.log, { reloaded: true });
      fresh.bridge.loadTls(); // unreadable or unsafe TLS files: rejected before the running agent is touched
    } catch (err) {
      this.log.error({ config: path, error: message(err) }, 'reloaded config rejected: the running config is kept');
      return { outcome: 'rejected', errors: [message(err)] };
    }
    this.log.warn({ config: path }, 'config changed: restarting the agent with it (an active curtailment is carried over)');
    const old = this.agentNow;
    this.running = false;
    await old.stop('reloading').catch((err: unknown) => this.log.error({ error: message(err) }, 'reload: stopping the previous agent failed'));
    if (this.stopRequested) {
      // a stop arrived meanwhile: nothing more to start
      this.log.info('reload: stop requested, the new config is not started');
      return { outcome: 'skipped', why: 'stopping' };
    }
    fresh.carryOver(old); // recent command ids and nonces: a redelivered command is not run again
    try {
      await fresh.start();
    } catch (err) {
      this.log.error({ error: message(err) }, 'the reloaded config failed to start: starting the previous one again');
      await fresh.stop().catch(() => undefined);
      this.agentNow = new Agent(this.config, this.log, { reloaded: true });
      this.agentNow.carryOver(old);
      await this.agentNow.start(); // throws when that fails too: doReload() makes it fatal
      this.running = true;
      return { outcome: 'failed', error: message(err) };
    }
    this.running = true;
    this.agentNow = fresh;
    this.config = next;
    this.log.level = this.o.logLevelOverride ?? next.log.level;
    this.log.info({ config: path, devices: next.devices.length }, 'config reloaded: agent restarted with it');
    return { outcome: 'replaced' };
  }

  private statusLine(): string {
    const c = this.config;
    return `running: site ${c.site}, rack ${c.rack}, ${c.devices.length} device(s)`;
  }
}
