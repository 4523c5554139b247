import { z } from 'zod';
import { keepWarmSchema } from '../lib/http-keep-warm.js';
import { idSchema } from '../lib/ids.js';
import { feedSchema, passwordSchema, tcpTransportSchema, usernameSchema, webPortSchema } from '../lib/transports.js';

export const ANTMINER_WORK_MODES = { normal: 0, sleep: 1, high: 2, low: 3 } as const;

export const antminerConfigSchema = z
  .object({
    id: idSchema,
    driver: z.literal('antminer'),
    name: z.string().max(128).optional(),
    /** The PDU outlet(s) feeding this device (hard cut when it ignores a soft curtail). */
    feed: feedSchema,
    /** host, `port` = the cgminer API (4028), and the connect/read deadlines of both the API and the web CGI. */
    ...tcpTransportSchema(4028),
    /** Port of the web CGI (HTTP Digest), the secondary endpoint that carries writes. */
    webPort: webPortSchema(80),
    /** Web CGI login (stock root/root). Never logged or put in errors. */
    username: usernameSchema.default('root'),
    password: passwordSchema.min(1).max(128).default('root'),
    /** Tuning of the web CGI (set_miner_conf.cgi / get_miner_conf.cgi). */
    cgi: z
      .object({
        /** Long deadline of set_miner_conf.cgi, which answers after ~20 s and then restarts bmminer. */
        setConfTimeoutMs: z.number().int().min(1000).max(180_000).default(60_000),
        /** How long an action waits for the CGI answer before going on to read-back (the POST keeps running). */
        ackWaitMs: z.number().int().min(0).max(60_000).default(2_000),
        /** The cached miner config (echoed back on every write) is refreshed off the hot path when older. */
        confMaxAgeMs: z.number().int().min(1000).max(86_400_000).default(300_000),
      })
      .strict()
      .prefault({}),
    /** Keep a connection to the web port open between actions (a small `GET /` when idle for 0.7 x the device's keep-alive idle; see drivers/lib/http-keep-warm.ts). */
    keepWarm: keepWarmSchema,
    /** Replies larger than this are refused (bytes), on the API and the web CGI. */
    maxResponseBytes: z.number().int().min(1024).max(16 * 1024 * 1024).default(1024 * 1024),
    /** A curtail is confirmed only when the miner does not hash and draws at most this. */
    sleepPowerMaxW: z.number().positive().max(1000).default(60),
    /**
     * Firmware that reports no power at all (no chain_power/power in stats) can never prove the
     * sleep level; with this true, "not hashing" alone confirms a curtail there. Off by default.
     */
    allowCurtailWithoutPower: z.boolean().default(false),
    /** Work modes offered as profiles (not every model has low/high). */
    profiles: z.array(z.enum(['normal', 'low', 'high'])).max(3).default(['normal', 'low', 'high']),
    /** Interval of read-back polls while confirming an action. */
    confirmPollMs: z.number().int().min(20).max(10_000).default(500),
  })
  .strict();

export type AntminerConfig = z.output<typeof antminerConfigSchema>;
