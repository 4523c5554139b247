/**
 * The `sparkplug` config block: Sparkplug B 3.0 for SCADA hosts (Ignition and
 * similar), off by default. The edge node has its own MQTT connection (its
 * Will is the NDEATH), by default to the agent's broker with the agent's
 * credentials and TLS files.
 */
import { z } from 'zod';

/** A Sparkplug id (group, edge node, device, host): UTF-8 without the reserved `+`, `/` and `#`. */
export const sparkplugIdSchema = z
  .string()
  .min(1, 'expected a non-empty id')
  .max(128, 'expected at most 128 characters')
  .regex(/^[^+/#\s]+$/, 'expected no "+", "/", "#" or white space (Sparkplug reserves them in topics)');

export const sparkplugConfigSchema = z
  .object({
    enabled: z.boolean().default(false),
    /** The Sparkplug group (topic level 2). Default: the agent's `site`. */
    groupId: sparkplugIdSchema.optional(),
    /** The edge node id. Default: `<site>-<rack>`. */
    edgeNodeId: sparkplugIdSchema.optional(),
    /** Broker URL. Default: `mqtt.url`; username, password and TLS follow `mqtt` unless given here. */
    url: z
      .string()
      .regex(/^(mqtts?|wss?):\/\/[^\s]+$/, 'expected a broker URL such as mqtt://127.0.0.1:1883 or mqtts://broker:8883')
      .optional(),
    username: z.string().optional(),
    password: z.string().optional(),
    /** Default: `rackpilot-sp-<site>-<rack>` (never the bridge's id: the broker would drop one of them). */
    clientId: z.string().min(1).max(128).optional(),
    /** 'auto' tries MQTT 5 and falls back to 3.1.1 when the broker refuses it. */
    protocolVersion: z.union([z.literal('auto'), z.literal(4), z.literal(5)]).default('auto'),
    /**
     * The primary host application's id: births wait for its retained
     * `spBv1.0/STATE/<id>` to say online; when it goes offline the node
     * publishes NDEATH, disconnects and connects again (with backoff).
     */
    primaryHostId: sparkplugIdSchema.optional(),
    /** Rebirth requests (NCMD `Node Control/Rebirth`) closer together than this are coalesced into one. */
    rebirthDebounceMs: z.number().int().min(0).max(600_000).default(1_000),
    /**
     * Writes from SCADA (`Rack Control/Curtail`, `Rack Control/Budget W`,
     * device `Control/Curtail`). They are unsigned: with
     * `security.requireSigned` they are refused whatever this says.
     */
    acceptWrites: z.boolean().default(true),
  })
  .strict()
  .prefault({});

export type SparkplugConfig = z.output<typeof sparkplugConfigSchema>;
