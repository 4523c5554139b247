/**
 * The package's root directory (the one holding package.json), found by
 * walking up from the calling module, so files shipped beside the code
 * (package.json, .proto files) are found from the sources, from dist/, and
 * from the bundled agent (scripts/bundle-agent.mjs) alike.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export function packageRoot(moduleUrl: string): string {
  let dir = dirname(fileURLToPath(moduleUrl));
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error(`package.json not found above ${fileURLToPath(moduleUrl)}`);
    dir = up;
  }
}
