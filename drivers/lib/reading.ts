import type { DeviceState, FieldValue, Reading } from '../contract.js';
import type { RackpilotError } from './errors.js';

export interface Sample {
  ts: number;
  state: DeviceState;
  powerW: number | null;
  fields: Record<string, FieldValue>;
}

/**
 * Turns samples and failures into Readings: a failed read keeps the last good
 * values, marked `stale` (or `missing` when there never was one), so stale
 * data is a value the agent can see and refuse to act on.
 */
export class ReadingTracker {
  private last: Sample | undefined;

  ok(sample: Sample): Reading {
    this.last = sample;
    return { ...sample, freshness: 'fresh', online: true };
  }

  failed(err: RackpilotError, now: number): Reading {
    const error = { code: err.code, message: err.message };
    if (!this.last) {
      return { ts: now, freshness: 'missing', online: false, state: 'unreachable', powerW: null, fields: {}, error };
    }
    return { ...this.last, freshness: 'stale', online: false, state: 'unreachable', error };
  }
}
