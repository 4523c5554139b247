/** `--families a,b` of the benchmark scripts: the catalog entries, or exit 2 naming the unknown family and the known ones. */
import { resolveFamilies, type CatalogEntry } from '../sim/catalog.js';

export function familiesArg(value: string | undefined): CatalogEntry[] | undefined {
  if (value === undefined) return undefined;
  const res = resolveFamilies(value.split(','));
  if (!res.ok) {
    console.error(`--families: ${res.error}`);
    process.exit(2);
  }
  return res.entries;
}
