/** Renders the JSON Schema documents of the contract from the zod schemas. */
import { z } from 'zod';
import { MESSAGE_SCHEMAS, commandParamsSchemas } from './messages.js';

export function renderJsonSchemas(): Record<string, string> {
  const out: Record<string, string> = {};
  const all: Record<string, z.ZodType> = { ...MESSAGE_SCHEMAS };
  for (const [name, schema] of Object.entries(commandParamsSchemas)) all[`params-${name}`] = schema;
  for (const [name, schema] of Object.entries(all)) {
    const doc = {
      $id: `https://rackpilot.invalid/protocol/v1/${name}.schema.json`,
      ...z.toJSONSchema(schema, { target: 'draft-2020-12', io: 'input' }),
    };
    out[`${name}.schema.json`] = `${JSON.stringify(doc, null, 2)}\n`;
  }
  return out;
}
