/**
 * The driver contract. A driver knows a device, never MQTT or policy.
 *
 * Lifecycle (CONVENTIONS.md #3): `create()` validates and does no I/O;
 * `start()` connects (or checks reachability); every I/O has a deadline;
 * `read()` never throws: it returns timestamped values with a freshness
 * state; actions are gated by `capabilities` and throw RackpilotError.
 */
import type { Logger } from 'pino';
import type { z } from 'zod';

export const DEVICE_KINDS = ['asic', 'gpu', 'pdu', 'meter', 'gpio', 'controller'] as const;
export type DeviceKind = (typeof DEVICE_KINDS)[number];

export const DEVICE_STATES = ['running', 'curtailed', 'transitioning', 'unreachable', 'unknown'] as const;
export type DeviceState = (typeof DEVICE_STATES)[number];

/** fresh: read in this cycle; stale: last good values, older than one cycle; missing: never read. */
export const FRESHNESS = ['fresh', 'stale', 'missing'] as const;
export type Freshness = (typeof FRESHNESS)[number];

export type FieldValue = number | string | boolean | null;

export interface Reading {
  /** Epoch ms at which the values were sampled (of the last good sample when stale). */
  ts: number;
  freshness: Freshness;
  /** Whether the device answered the last read. */
  online: boolean;
  state: DeviceState;
  powerW: number | null;
  /** Kind-specific normalized fields, e.g. hashrateThs, temperatureC, fanRpm. */
  fields: Record<string, FieldValue>;
  /** Why the last read failed, when it did. */
  error?: { code: string; message: string };
}

export interface PowerTargetRange {
  minW: number;
  maxW: number;
  /** True when changing the target restarts the device (never used on the fast path). */
  reboots: boolean;
}

export interface Capabilities {
  curtail: boolean;
  restore: boolean;
  /** Settable power target in watts, or null when the device has none (say so honestly). */
  powerTarget: PowerTargetRange | null;
  /** Named operating profiles/modes (e.g. Antminer low/normal/high, LuxOS profiles). */
  profiles: boolean;
  /** A PDU that can switch its outlets (`switchOutlet`). */
  switchOutlet: boolean;
  /** A digital output (GPIO line driving a relay, contactor or lamp: `setOutput`). */
  output?: boolean;
}

/**
 * A value a device measures faster than the telemetry poll: a meter's grid
 * frequency or active power, a GPIO input's level. Signal conditions
 * (agent/signals.ts) watch these streams.
 */
export interface SignalSample {
  /** Device id. */
  device: string;
  /** Channel name, e.g. `frequencyHz`, `powerW`, `input`. */
  channel: string;
  value: number;
  /** Epoch ms when the value was measured (GPIO: captured in the interrupt callback). */
  ts: number;
  /** False when the source could not be read (a meter that stopped answering); `value` is then the last one. */
  fresh: boolean;
}

export type SignalListener = (sample: SignalSample) => void;

export interface Profile {
  name: string;
  /** Nominal draw of the profile, when the device says. */
  powerW?: number;
  hashrateThs?: number;
}

export interface ActionOptions {
  /** Overall deadline for the action including its read-back confirmation. */
  deadlineMs: number;
  signal?: AbortSignal;
  /**
   * Read-back confirmation starts once this settles (the deadline still
   * runs): the engine holds a wave's read-backs until its devices have
   * acknowledged, so telemetry answers do not delay other devices' command
   * answers.
   */
  confirmAfter?: Promise<unknown>;
  /** Called once, when the device acknowledged the write or the send failed for good. */
  onAck?: () => void;
}

export interface ActionResult {
  /** True only when read-back confirmed the new state. */
  confirmed: boolean;
  /** Milliseconds from the call until the device acknowledged the write. */
  ackMs: number;
  /** Milliseconds from the call until read-back confirmation. */
  tookMs: number;
  /** The reading that confirmed it. */
  reading: Reading;
}

export type ActionName = 'curtail' | 'restore';

/**
 * A curtail made ready before it is needed: the request already encoded,
 * the session or token it needs in hand, the connection warm where the
 * protocol keeps one. The engine arms every device it may have to shed and
 * keeps them current as telemetry comes in, so that a signal edge costs
 * each device one send and nothing else.
 */
export interface ArmedAction {
  /**
   * Hands the command to the OS now: synchronous, and nothing but the send
   * (no timers, no promises, no logging; those wait for `complete`).
   * Returns undefined when the preparation is no longer usable (the session
   * it was built with is gone): the caller then runs the plain action. Fire
   * an armed action at most once.
   */
  fire(): FiredAction | undefined;
}

/** An armed action on the wire. */
export interface FiredAction {
  /**
   * Finishes the action as the plain one would: the answer checked (a
   * failed first send is retried the plain way while the deadline allows),
   * then confirmed by read-back. `ackMs` and `tookMs` count from `fire()`.
   * Called once, right after the fan-out of sends.
   */
  complete(opts: ActionOptions): Promise<ActionResult>;
}

export interface DeviceDriver {
  readonly id: string;
  readonly kind: DeviceKind;
  readonly driverId: string;
  readonly capabilities: Capabilities;
  start(): Promise<void>;
  stop(): Promise<void>;
  read(opts: { deadlineMs: number; signal?: AbortSignal }): Promise<Reading>;
  /** Sheds the device's load; resolves once read-back confirms, throws NOT_CONFIRMED otherwise. */
  curtail?(opts: ActionOptions): Promise<ActionResult>;
  /**
   * The curtail, prepared to go out with one send (see ArmedAction); called
   * every telemetry cycle, so cheap, and with no I/O beyond starting to open
   * a connection the armed send needs. Undefined when it cannot be prepared
   * now (no session yet, that connection not up yet).
   */
  armCurtail?(): ArmedAction | undefined;
  /** Returns the device to normal operation; resolves once read-back confirms. */
  restore?(opts: ActionOptions): Promise<ActionResult>;
  /** Sets a power target within `capabilities.powerTarget`; resolves once read-back confirms. */
  setPowerTarget?(watts: number, opts: ActionOptions): Promise<ActionResult>;
  /** The profiles the device offers (capabilities.profiles). */
  listProfiles?(opts: { deadlineMs: number; signal?: AbortSignal }): Promise<Profile[]>;
  /** Switches to a named profile; resolves once read-back confirms. */
  setProfile?(name: string, opts: ActionOptions): Promise<ActionResult>;
  /** Switches one PDU outlet; resolves once read-back confirms its state. */
  switchOutlet?(outlet: string, on: boolean, opts: ActionOptions): Promise<ActionResult>;
  /** Drives a digital output; resolves once read-back confirms the level. */
  setOutput?(on: boolean, opts: ActionOptions): Promise<ActionResult>;
  /** The channels this device streams (meters, GPIO inputs), once started. */
  readonly signalChannels?: readonly string[];
  /** Subscribes to the device's samples; returns the unsubscribe function. */
  onSignal?(listener: SignalListener): () => void;
}

export interface DriverContext {
  logger: Logger;
  /** Clock, overridable by tests. */
  now: () => number;
}

/** Every device block has these keys; a driver's schema extends them. */
export interface BaseDeviceConfig {
  id: string;
  driver: string;
  name?: string | undefined;
}

/**
 * How detection recognises a firmware family (data, not code): substrings
 * looked for, case-insensitively, in what the device answers. Detection
 * (`rackpilot probe`, `scan`, `driver: auto`) reads these from the registry.
 */
export interface Fingerprint {
  /** In the cgminer-family API's `version` / `devdetails` replies (port 4028), e.g. "LUXminer". */
  api?: string[];
  /** In the web UI: the body of `GET /`, a WWW-Authenticate realm, or a redirect Location. */
  web?: { bodyIncludes?: string[]; realm?: string; redirectIncludes?: string[] };
  /** Other ports that answer only for this family (e.g. Braiins gRPC on 50051): an open port is weak evidence. */
  ports?: number[];
  /**
   * A request in 4-byte little-endian length-prefixed JSON frames (Whatsminer API v3 on 4433):
   * `expect` substrings are looked for in the reply, re-serialised as compact JSON.
   */
  framed?: { port: number; request: Record<string, unknown>; expect: string[] };
}

export interface DriverDefinition<S extends z.ZodType<BaseDeviceConfig> = z.ZodType<BaseDeviceConfig>> {
  /** Matches the `driver:` key in config. */
  readonly id: string;
  readonly kind: DeviceKind;
  readonly description: string;
  /** How detection recognises this family. */
  readonly fingerprint?: Fingerprint;
  /** The device block's schema, with `driver: z.literal(id)`. */
  readonly configSchema: S;
  create(config: z.output<S>, ctx: DriverContext): DeviceDriver;
}

