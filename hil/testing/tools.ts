/**
 * Finding the external tools some tests need (Mosquitto, socat, python3).
 * Without one, a test skips with a visible message; under CI=true it fails.
 */
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';

const EXTRA_DIRS = ['/usr/sbin', '/usr/local/sbin', '/sbin'];

export function findTool(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), ...EXTRA_DIRS];
  for (const d of dirs) {
    if (!d) continue;
    const p = join(d, name);
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      // keep looking
    }
  }
  return undefined;
}

export const IN_CI = process.env.CI === 'true' || process.env.CI === '1';

/**
 * Returns the tool's path, or a skip reason. Under CI a missing tool throws,
 * so the test fails instead of silently skipping.
 */
export function requireTool(name: string, debianPackage: string): { path: string } | { skip: string } {
  const path = findTool(name);
  if (path) return { path };
  const msg = `${name} not found: install it with "apt-get install ${debianPackage}" (.ci/run does this)`;
  if (IN_CI) throw new Error(`CI=true and ${msg}`);
  process.stderr.write(`SKIP: ${msg}\n`);
  return { skip: msg };
}
