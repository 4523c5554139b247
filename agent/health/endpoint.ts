/**
 * The agent's local HTTP endpoint (config `health`): `GET|HEAD /healthz`
 * (JSON, agent/health/status.ts) and `GET|HEAD /metrics` (Prometheus text,
 * agent/health/metrics.ts). Other paths: 404; other methods: 405.
 *
 * It never stops the agent: a port in use (or any listen error) is logged and
 * the agent runs without the endpoint. Constructing it does no I/O.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { CommandResult } from '../../protocol/messages.js';
import type { CycleStats } from '../poller.js';
import { isLoopback, type HealthConfig } from './config.js';
import { LoopLagMonitor } from './loop-lag.js';
import { AgentMetrics } from './metrics.js';
import type { HealthSources } from './sources.js';
import { healthReport, type HealthReport } from './status.js';

/** A client gets this long to send its request headers / whole request. */
const REQUEST_TIMEOUT_MS = 10_000;

export class HealthEndpoint {
  /** Present when `health.enabled`. */
  readonly metrics: AgentMetrics | undefined;
  private readonly loop = new LoopLagMonitor();
  private server: Server | undefined;
  private ready = false;
  private readonly createdAt = Date.now();

  constructor(
    private readonly cfg: HealthConfig,
    private readonly sources: HealthSources,
    private readonly log: Logger,
  ) {
    this.metrics = cfg.enabled ? new AgentMetrics(sources, () => this.ready) : undefined;
  }

  /** Starts listening; never throws (a listen error is logged and the agent runs without the endpoint). */
  async start(): Promise<void> {
    if (!this.cfg.enabled || this.server) return;
    const { listen: host, port } = this.cfg;
    if (!isLoopback(host)) this.log.warn({ listen: host, port }, 'health endpoint listens on a non-loopback address: /healthz and /metrics have no authentication (firewall the port)');
    const server = createServer((req, res) => this.handle(req, res));
    server.headersTimeout = REQUEST_TIMEOUT_MS;
    server.requestTimeout = REQUEST_TIMEOUT_MS;
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ host, port }, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      this.log.error({ listen: host, port, code: e.code, error: e.message }, 'health endpoint cannot listen (change health.port or health.listen); running without /healthz and /metrics');
      return;
    }
    server.on('error', (err) => this.log.error({ error: err.message }, 'health endpoint error'));
    this.server = server;
    this.loop.start();
    const a = this.address();
    this.log.debug({ listen: a?.host, port: a?.port }, 'health endpoint listening');
  }

  /** Marks the agent started (true) or stopping (false): `/healthz` answers 503 while not ready. */
  setReady(ready: boolean): void {
    this.ready = ready;
  }

  /** Where the endpoint listens (the bound port when config said 0), or null when it does not. */
  address(): { host: string; port: number } | null {
    const a = this.server?.address();
    if (!a || typeof a === 'string') return null;
    return { host: a.address, port: a.port };
  }

  async close(): Promise<void> {
    this.ready = false;
    this.loop.stop();
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  }

  /** Once per poll cycle (the poller's CycleStats). */
  observeCycle(stats: CycleStats): void {
    this.metrics?.observeCycle(stats);
  }

  /** Once per command result sent. */
  onResult(r: Pick<CommandResult, 'command' | 'status'>): void {
    this.metrics?.onResult(r);
  }

  /** The `/healthz` report (also for callers in-process). */
  async report(): Promise<HealthReport> {
    const lagMs = await this.loop.sample();
    return healthReport(this.sources, { ready: this.ready, startedAt: this.createdAt, maxLoopLagMs: this.cfg.maxLoopLagMs, loop: this.loop.window(), lagMs });
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? '/').split('?', 1)[0];
    if (path !== '/healthz' && path !== '/metrics') {
      send(res, req, 404, 'text/plain; charset=utf-8', 'not found: try /healthz or /metrics\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('Allow', 'GET, HEAD');
      send(res, req, 405, 'text/plain; charset=utf-8', 'method not allowed: GET or HEAD\n');
      return;
    }
    const answer = path === '/healthz' ? this.healthz() : this.scrape();
    answer.then(
      ({ code, type, body }) => send(res, req, code, type, body),
      (err: unknown) => {
        this.log.error({ path, error: err instanceof Error ? err.message : String(err) }, 'health endpoint request failed');
        send(res, req, 500, 'text/plain; charset=utf-8', 'internal error\n');
      },
    );
  }

  private async healthz(): Promise<{ code: number; type: string; body: string }> {
    const r = await this.report();
    return { code: r.status === 'unhealthy' ? 503 : 200, type: 'application/json; charset=utf-8', body: `${JSON.stringify(r)}\n` };
  }

  private async scrape(): Promise<{ code: number; type: string; body: string }> {
    if (!this.metrics) throw new Error('metrics disabled');
    const m = await this.metrics.scrape();
    return { code: 200, type: m.contentType, body: m.body };
  }
}

function send(res: ServerResponse, req: IncomingMessage, code: number, type: string, body: string): void {
  if (res.headersSent || res.destroyed) return;
  res.writeHead(code, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body), 'Cache-Control': 'no-store' });
  res.end(req.method === 'HEAD' ? undefined : body);
}
