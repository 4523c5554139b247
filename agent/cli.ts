#!/usr/bin/env node
/**
 * rackpilot command line:
 *   rackpilot run --config FILE
 *   rackpilot config check FILE
 *   rackpilot doctor [--config FILE] [--json] [--timeout MS]
 *   rackpilot demo [--broker URL] [--asics N] [--families a,b] [--site S] [--rack R] [--port P]
 *   rackpilot probe HOST [--api-port N] [--http-port N] [--user U] [--password P] [--json]
 *   rackpilot scan CIDR [--json] [--concurrency N] [--timeout MS] [--api-port N] [--http-port N]
 *   rackpilot gpu-node --listen HOST:PORT --key-file FILE [--library PATH]
 *   rackpilot events export [--dir DIR | --config FILE] [--activation ID] [--format csv|json] [--table power|devices] [--out FILE]
 *   rackpilot bench curtail [--devices N] [--trials T] [--json]
 *   rackpilot sign [FILE|-] --key FILE --key-id ID [--target SITE/RACK] [--ttl MS]
 *   rackpilot sign --keygen --out FILE [--key-id ID]
 */
import { parseArgs } from 'node:util';
// first: zod reads this setting as each schema module loads
import './zod-jitless.js';
import { loadConfigFile } from './config.js';
import { createLogger } from './logger.js';
import { AGENT_VERSION } from './version.js';

const USAGE = `rackpilot ${AGENT_VERSION} — rack-level curtailment agent

usage:
  rackpilot run --config FILE [--log-level LEVEL]   run the agent
  rackpilot config check FILE                       validate a config file
  rackpilot doctor [--config FILE] [--json] [--timeout MS]
                                                    check an installation: config, broker, TLS, GPIO, serial,
                                                    NVML, every device, clock (default /etc/rackpilot/config.yaml)
  rackpilot demo [--broker URL] [--asics N] [--families a,b] [--site S] [--rack R] [--port P]
                 [--dip-at S] [--trip-at S] [--hold-off S] [--state-dir DIR] [--health-port P]
                                                    simulated rack of mixed families + embedded broker
  rackpilot probe HOST [--api-port N] [--http-port N] [--user U] [--password P]
                  [--timeout MS] [--json]           identify a miner and read it once
  rackpilot scan CIDR [--json] [--concurrency N] [--timeout MS]
                  [--api-port N] [--http-port N] [--user U] [--password P] [--no-read]
                                                    find and identify miners (at most a /16)
  rackpilot gpu-node --listen HOST:PORT --key-file FILE [--library PATH] [--log-level LEVEL]
                                                    serve this server's GPUs (NVML) to a rack agent
  rackpilot events export [--dir DIR | --config FILE] [--activation ID] [--format csv|json]
                  [--table power|devices] [--out FILE]
                                                    write the evidence log (activations, 100 ms rack power)
  rackpilot bench curtail [--devices N] [--trials T] [--json]
                                                    signal-to-dispatch latency against a raw fan-out floor
  rackpilot sign [FILE|-] --key FILE --key-id ID [--target SITE/RACK] [--ttl MS]
                                                    sign a command (JSON from FILE or stdin), print it, one line
  rackpilot sign --keygen --out FILE [--key-id ID]  new Ed25519 key pair: FILE (private, 0600) and FILE.pub
  rackpilot --version | --help

  probe/scan take the miner password from --password or RACKPILOT_MINER_PASSWORD
  (never printed). probe exits 0 when the family was identified, 1 otherwise.
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
      const level = values['log-level'];
      const log = createLogger(level ?? res.config.log.level, 'rackpilot', 1);
      // a stray rejection is a bug to log, not a reason to stop curtailing the rack
      process.on('unhandledRejection', (reason) => log.error({ err: reason }, 'unhandled promise rejection'));
      const { Service } = await import('./service.js');
      const service = new Service({
        configPath: values.config,
        config: res.config,
        log,
        ...(level !== undefined ? { logLevelOverride: level } : {}),
        // a reload left no agent running: exit, and systemd (Restart=always) starts a fresh process
        onFatal: () => {
          setTimeout(() => process.exit(1), 1000).unref();
          log.flush(() => process.exit(1));
        },
      });
      onSignals(() => service.stop());
      process.on('SIGHUP', () => {
        log.info({ config: values.config }, 'SIGHUP: reloading the config');
        void service.reload();
      });
      try {
        await service.start();
      } catch (err) {
        await service.stop().catch(() => undefined);
        fail(err instanceof Error ? err.message : String(err), 1);
      }
      return;
    }
    case 'doctor': {
      const { runDoctor } = await import('./doctor/cli.js');
      process.exitCode = await runDoctor(rest, process.stdout);
      return;
    }
    case 'events': {
      const [sub, ...args] = rest;
      if (sub !== 'export') fail(`events: expected "events export", got "${sub ?? ''}"\n\n${USAGE}`);
      const { runEventsExport } = await import('./engine/evidence-export.js');
      process.exitCode = await runEventsExport(args, process.stdout);
      return;
    }
    case 'bench': {
      const [sub, ...args] = rest;
      if (sub !== 'curtail') fail(`bench: expected "bench curtail", got "${sub ?? ''}"\n\n${USAGE}`);
      const { runEngineBench } = await import('../hil/bench/engine-bench.js');
      process.exitCode = await runEngineBench(args);
      return;
    }
    case 'sign': {
      const { runSign } = await import('./sign-cli.js');
      process.exitCode = await runSign(rest);
      return;
    }
    case 'demo': {
      // loaded only here: `run` never pays for the simulators and the embedded broker
      const { demoBanner, parseDemoArgs, startDemo } = await import('./demo.js');
      const parsed = parseDemoArgs(rest);
      if (!parsed.ok) fail(parsed.error);
      const opts = parsed.opts;
      const log = createLogger(parsed.logLevel);
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
    case 'gpu-node': {
      const { values } = parseArgs({
        args: rest,
        options: { listen: { type: 'string' }, 'key-file': { type: 'string' }, library: { type: 'string' }, 'log-level': { type: 'string' } },
      });
      const m = /^(.+):(\d{1,5})$/.exec(values.listen ?? '0.0.0.0:9400');
      if (!m?.[1]) fail('gpu-node: --listen expects HOST:PORT such as 0.0.0.0:9400');
      const port = intArg(m[2], 'listen', 9400, 1, 65535);
      if (!values['key-file']) fail('gpu-node: --key-file FILE is required (the shared key, at least 16 characters; the same as the device\'s `key`)');
      const { readFileSync, statSync } = await import('node:fs');
      let key: string;
      try {
        key = readFileSync(values['key-file'], 'utf8').trim();
      } catch (err) {
        fail(`gpu-node: cannot read --key-file: ${(err as Error).message}`);
      }
      if (key.length < 16) fail('gpu-node: the key in --key-file must have at least 16 characters');
      const log = createLogger(values['log-level'] ?? 'info');
      if ((statSync(values['key-file']).mode & 0o077) !== 0) log.warn({ file: values['key-file'] }, 'key file is readable by group/others; chmod 600 it');
      const { startGpuNode } = await import('./gpu-node.js');
      const { LocalGpuBackend } = await import('../drivers/gpu/local.js');
      const backend = new LocalGpuBackend(values.library !== undefined ? { libraryPath: values.library } : {});
      try {
        await backend.open();
      } catch (err) {
        fail(`gpu-node: ${err instanceof Error ? err.message : String(err)}`, 1);
      }
      process.on('unhandledRejection', (reason) => log.error({ err: reason }, 'unhandled promise rejection'));
      const node = await startGpuNode({ backend, key, host: m[1].replace(/^\[|\]$/g, ''), port, logger: log.child({ component: 'gpu-node' }) });
      onSignals(async () => {
        await node.close();
        await backend.close();
      });
      return;
    }
    case 'probe':
    case 'scan': {
      const { values, positionals } = parseArgs({
        args: rest,
        allowPositionals: true,
        options: {
          'api-port': { type: 'string' },
          'http-port': { type: 'string' },
          user: { type: 'string' },
          password: { type: 'string' },
          timeout: { type: 'string' },
          concurrency: { type: 'string' },
          json: { type: 'boolean' },
          'no-read': { type: 'boolean' },
          /** canonical=actual family port, e.g. 4433=14433 (port forwarding, tests) */
          'port-map': { type: 'string', multiple: true },
        },
      });
      const target = positionals[0];
      if (!target || positionals.length > 1) fail(`usage: rackpilot ${cmd} ${cmd === 'probe' ? 'HOST' : 'CIDR'} [options] (see --help)`);
      const portMap: Record<number, number> = {};
      for (const pm of values['port-map'] ?? []) {
        const m = /^(\d{1,5})=(\d{1,5})$/.exec(pm);
        if (!m) fail(`--port-map: expected CANONICAL=ACTUAL such as 4433=14433, got "${pm}"`);
        portMap[Number(m[1])] = intArg(m[2], 'port-map', 0, 1, 65535);
      }
      const password = values.password ?? process.env.RACKPILOT_MINER_PASSWORD;
      const credentials = { ...(values.user !== undefined ? { user: values.user } : {}), ...(password !== undefined ? { password } : {}) };
      const common = {
        ...(values['api-port'] !== undefined ? { apiPort: intArg(values['api-port'], 'api-port', 4028, 1, 65535) } : {}),
        ...(values['http-port'] !== undefined ? { httpPort: intArg(values['http-port'], 'http-port', 80, 1, 65535) } : {}),
        ...(Object.keys(portMap).length > 0 ? { portMap } : {}),
        credentials,
      };
      if (cmd === 'probe') {
        if (!/^[A-Za-z0-9.:_-]{1,253}$/.test(target)) fail(`probe: "${target}" is not a host name or IP address`);
        const timeout = intArg(values.timeout, 'timeout', 2000, 50, 60_000);
        const { probeHost, formatProbe, probeJson } = await import('./probe.js');
        const r = await probeHost({ host: target, ...common, probeTimeoutMs: timeout, readDeadlineMs: Math.max(timeout, 5000), quiet: true });
        process.stdout.write(values.json ? `${JSON.stringify(probeJson(r))}\n` : formatProbe(r));
        process.exitCode = r.detection.driver ? 0 : 1;
        return;
      }
      const { expandCidr, scan, formatScan } = await import('./scan.js');
      const range = expandCidr(target);
      if (!range.ok) fail(`scan: ${range.error}`);
      const { hosts, summary } = await scan({
        hosts: range.hosts,
        ...common,
        concurrency: intArg(values.concurrency, 'concurrency', 64, 1, 1024),
        timeoutMs: intArg(values.timeout, 'timeout', 3000, 100, 60_000),
        noRead: values['no-read'] === true,
      });
      if (values.json) process.stdout.write(`${JSON.stringify(hosts.filter((h) => h.status === 'miner'))}\n`);
      else process.stdout.write(formatScan(hosts, summary));
      return;
    }
    default:
      fail(`unknown command "${cmd}"\n\n${USAGE}`);
  }
}

main(process.argv.slice(2)).catch((err: unknown) => fail(err instanceof Error ? err.message : String(err), 1));
