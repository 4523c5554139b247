/** `rackpilot run --config FILE` as a child process of a test (the built CLI, output discarded). */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { repoRoot } from './root.js';

export function cliRun(configFile: string): ChildProcess {
  return spawn(process.execPath, [join(repoRoot(), 'dist', 'agent', 'cli.js'), 'run', '--config', configFile], { stdio: 'ignore' });
}
