/** MQTT topics of the rackpilot v1 contract. See protocol/README.md. */
import { z } from 'zod';

export const PROTOCOL_VERSION = 'v1';

/** Site and rack ids become topic levels: letters, digits, "_" and "-" only. */
export const topicIdSchema = z
  .string()
  .min(1, 'expected a non-empty id')
  .max(64, 'expected at most 64 characters')
  .regex(/^[A-Za-z0-9_-]+$/, 'expected only letters, digits, "_" and "-"');

export interface RackTopics {
  root: string;
  status: string;
  telemetry: string;
  state: string;
  events: string;
  cmd: string;
  cmdResult: string;
}

export function rackTopics(site: string, rack: string): RackTopics {
  topicIdSchema.parse(site);
  topicIdSchema.parse(rack);
  const root = `rackpilot/${PROTOCOL_VERSION}/${site}/${rack}`;
  return {
    root,
    status: `${root}/status`,
    telemetry: `${root}/telemetry`,
    state: `${root}/state`,
    events: `${root}/events`,
    cmd: `${root}/cmd`,
    cmdResult: `${root}/cmd/result`,
  };
}
