import { packageRoot } from '../../drivers/lib/package-root.js';

/** The repository root (tests run from dist/test/). */
export function repoRoot(): string {
  return packageRoot(import.meta.url);
}
