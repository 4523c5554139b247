/**
 * The agent's entry file as the benchmarks start it in a process of its own:
 * the bundled agent (scripts/bundle-agent.mjs, which `npm run build` writes
 * to dist/bundle/agent/) when there is one, since that is what a release
 * installs and the service runs; else tsc's dist/agent/cli.js (in a release,
 * that path is the bundle).
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export interface AgentCli {
  path: string;
  /** Says which build it is, for the report. */
  build: 'bundled' | 'unbundled';
}

export function agentCli(): AgentCli {
  const bundled = fileURLToPath(new URL('../../bundle/agent/cli.js', import.meta.url));
  if (existsSync(bundled)) return { path: bundled, build: 'bundled' };
  return { path: fileURLToPath(new URL('../../agent/cli.js', import.meta.url)), build: 'unbundled' };
}
