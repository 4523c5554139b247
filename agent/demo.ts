/**
 * `rackpilot demo`: N simulated LuxOS miners on loopback, an embedded broker
 * (unless --broker), and the agent on them; prints what to watch and type.
 */
import type { Logger } from 'pino';
import { LuxosSim } from '../hil/sim/luxos-sim.js';
import { Agent } from './agent.js';
import { validateConfig } from './config.js';
import { startEmbeddedBroker, type EmbeddedBroker } from './embedded-broker.js';

export interface DemoOptions {
  broker?: string | undefined;
  asics: number;
  site: string;
  rack: string;
  port: number;
  intervalMs: number;
}

export interface RunningDemo {
  agent: Agent;
  sims: LuxosSim[];
  broker: EmbeddedBroker | undefined;
  brokerUrl: string;
  stop(): Promise<void>;
}

export async function startDemo(opts: DemoOptions, log: Logger): Promise<RunningDemo> {
  const sims: LuxosSim[] = [];
  let broker: EmbeddedBroker | undefined;
  try {
    for (let i = 0; i < opts.asics; i++) {
      const sim = new LuxosSim({ miningW: 3000 + (i % 4) * 150, hashrateThs: 100 + (i % 4) * 10, sleepDelayMs: 3000, wakeRampMs: 6000 });
      await sim.listen();
      sims.push(sim);
    }
    if (!opts.broker) broker = await startEmbeddedBroker('127.0.0.1', opts.port);
    const brokerUrl = opts.broker ?? (broker as EmbeddedBroker).url;
    const parsed = validateConfig({
      site: opts.site,
      rack: opts.rack,
      // the embedded aedes broker speaks MQTT 3.1.1 only: skip the MQTT 5 attempt
      mqtt: { url: brokerUrl, protocolVersion: broker ? 4 : 'auto', reconnect: { minMs: 250, maxMs: 5000 } },
      poll: { intervalMs: opts.intervalMs, deadlineMs: 2000 },
      actions: { deadlineMs: 20_000 },
      devices: sims.map((s, i) => ({
        id: `miner-${String(i + 1).padStart(2, '0')}`,
        driver: 'luxos',
        host: '127.0.0.1',
        port: s.server.port,
      })),
    });
    if (!parsed.ok) throw new Error(`demo config invalid:\n  ${parsed.errors.join('\n  ')}`);
    const agent = new Agent(parsed.config, log);
    await agent.start();
    return {
      agent,
      sims,
      broker,
      brokerUrl,
      stop: async () => {
        await agent.stop();
        await broker?.close();
        await Promise.all(sims.map((s) => s.close()));
      },
    };
  } catch (err) {
    await broker?.close();
    await Promise.all(sims.map((s) => s.close()));
    throw err;
  }
}

export function demoBanner(d: RunningDemo, opts: DemoOptions): string {
  const t = d.agent.topics;
  const u = new URL(d.brokerUrl);
  const hp = `-h ${u.hostname} -p ${u.port || '1883'}`;
  return [
    '',
    `rackpilot demo: ${d.sims.length} simulated LuxOS miner(s), site "${opts.site}", rack "${opts.rack}"`,
    `broker: ${d.brokerUrl}${d.broker ? ' (embedded aedes, MQTT 3.1.1)' : ''}`,
    '',
    'Watch everything the agent publishes:',
    `  mosquitto_sub ${hp} -v -t '${t.root}/#'`,
    '',
    'Curtail the whole rack (miners go to sleep, ~25 W each, in a few seconds):',
    `  mosquitto_pub ${hp} -t '${t.cmd}' -m '{"id":"demo-curtail-1","command":"curtail"}'`,
    '',
    'Restore it:',
    `  mosquitto_pub ${hp} -t '${t.cmd}' -m '{"id":"demo-restore-1","command":"restore"}'`,
    '',
    `Results arrive on ${t.cmdResult}; the protocol is described in protocol/README.md.`,
    'Press Ctrl-C to stop.',
    '',
  ].join('\n');
}
