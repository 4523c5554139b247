/** `npm run schema`: regenerates protocol/schema/*.json from the zod schemas. */
import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { renderJsonSchemas } from './json-schema.js';

// dist/protocol/generate.js -> <repo>/protocol/schema
const dir = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'protocol', 'schema');
mkdirSync(dir, { recursive: true });
for (const f of readdirSync(dir)) if (f.endsWith('.schema.json')) rmSync(join(dir, f));
const files = renderJsonSchemas();
for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
console.log(`wrote ${Object.keys(files).length} JSON Schema files to ${dir}`);
