#!/usr/bin/env node
/**
 * rackpilot command line:
 *   rackpilot run --config FILE
 *   rackpilot config check FILE
 *   rackpilot demo [--broker URL] [--asics N] [--site S] [--rack R] [--port P]
 */
import { parseArgs } from 'node:util';
import { Agent } from './agent.js';
import { loadConfigFile } from './config.js';
import { createLogger } from './logger.js';
import { AGENT_VERSION } from './version.js';

const USAGE = `rackpilot ${AGENT_VERSION} — rack-level curtailment agent

usage:
  rackpilot run --config FILE [--log-level LEVEL]   run the agent
  rackpilot config check FILE                       validate a config file
  rackpilot demo [--broker URL] [--asics N] [--site S] [--rack R] [--port P]
                                                    simulated rack + embedded broker
  rackpilot --version | --help
`;

function fail(msg: string, code = 2): never {
  process.stderr.write(`rackpilot: ${msg}\n`);
  process.exit(code);
}

/** Stops `stop` on SIGINT/SIGTERM; a second signal exits at once. */
function onSignals(stop: () => Promise<void>): void {
  let stopping = false;
  const handler = (sig: NodeJS.Signals): void => {
    if (stopping) process.exit(130);
    stopping = true;
    process.stderr.write(`\nrackpilot: ${sig}, stopping…\n`);
    const hard = setTimeout(() => process.exit(1), 10_000);
    hard.unref();
    stop().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
}

function intArg(v: string | undefined, name: string, def: number, min: number, max: number): number {
  if (v === undefined) return def;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) fail(`--${name}: expected an integer from ${min} to ${max}, got "${v}"`);
  return n;
}

async function main(argv: string[]): Promise<void> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(USAGE);
      return;
    case '--version':
    case 'version':
      process.stdout.write(`${AGENT_VERSION}\n`);
      return;
    case 'config': {
      const [sub, file, ...extra] = rest;
      if (sub !== 'check' || !file || extra.length > 0) fail('usage: rackpilot config check FILE');
      const res = loadConfigFile(file);
      if (!res.ok) {
        process.stderr.write(`${file}: ${res.errors.length} error(s)\n`);
        for (const e of res.errors) process.stderr.write(`  ${e}\n`);
        process.exit(1);
      }
      process.stdout.write(`${file}: OK (site ${res.config.site}, rack ${res.config.rack}, ${res.config.devices.length} device(s))\n`);
      return;
    }
    case 'run': {
      const { values } = parseArgs({ args: rest, options: { config: { type: 'string', short: 'c' }, 'log-level': { type: 'string' } } });
      if (!values.config) fail('run: --config FILE is required');
      const res = loadConfigFile(values.config);
      if (!res.ok) {
        process.stderr.write(`${values.config}: ${res.errors.length} error(s)\n`);
        for (const e of res.errors) process.stderr.write(`  ${e}\n`);
        process.exit(1);
      }
      const log = createLogger(values['log-level'] ?? res.config.log.level);
      // a stray rejection is a bug to log, not a reason to stop curtailing the rack
      process.on('unhandledRejection', (reason) => log.error({ err: reason }, 'unhandled promise rejection'));
      const agent = new Agent(res.config, log);
      onSignals(() => agent.stop());
      try {
        await agent.start();
      } catch (err) {
        await agent.stop().catch(() => undefined);
        fail(err instanceof Error ? err.message : String(err), 1);
      }
      return;
    }
    case 'demo': {
      const { values } = parseArgs({
        args: rest,
        options: {
          broker: { type: 'string' },
          asics: { type: 'string' },
          site: { type: 'string' },
          rack: { type: 'string' },
          port: { type: 'string' },
          interval: { type: 'string' },
          'log-level': { type: 'string' },
        },
      });
      const idRe = /^[A-Za-z0-9_-]{1,64}$/;
      const site = values.site ?? 'demo-site';
      const rack = values.rack ?? 'rack-01';
      if (!idRe.test(site)) fail(`--site: "${site}" must be 1-64 of letters, digits, "_" and "-"`);
      if (!idRe.test(rack)) fail(`--rack: "${rack}" must be 1-64 of letters, digits, "_" and "-"`);
      if (values.broker !== undefined && !/^(mqtts?|wss?):\/\/\S+$/.test(values.broker)) {
        fail(`--broker: expected a URL such as mqtt://127.0.0.1:1883, got "${values.broker}"`);
      }
      const opts = {
        broker: values.broker,
        asics: intArg(values.asics, 'asics', 4, 1, 512),
        site,
        rack,
        port: intArg(values.port, 'port', 1883, 1, 65535),
        intervalMs: intArg(values.interval, 'interval', 2000, 100, 60_000),
      };
      const log = createLogger(values['log-level'] ?? 'warn');
      // loaded only here: `run` never pays for the simulators and the embedded broker
      const { demoBanner, startDemo } = await import('./demo.js');
      let demo;
      try {
        demo = await startDemo(opts, log);
      } catch (err) {
        fail((err as Error).message, 1);
      }
      onSignals(() => demo.stop());
      process.stdout.write(demoBanner(demo, opts));
      return;
    }
    default:
      fail(`unknown command "${cmd}"\n\n${USAGE}`);
  }
}

main(process.argv.slice(2)).catch((err: unknown) => fail(err instanceof Error ? err.message : String(err), 1));
