/**
 * Turns off zod's run-time code generation for the agent's process. The CLI
 * (agent/cli.ts) imports this module before anything else, because zod reads
 * the setting when each object schema is built, and the schemas are built
 * when their modules load.
 *
 * By default a zod object schema compiles a parser for its shape with
 * `new Function` the first time it parses (its "fastpass"), and keeps it, the
 * generated source included, for the life of the process. The agent parses
 * its config, MQTT commands and state files with zod, never device answers,
 * so that speed buys nothing, while the code stays: about 280 generated
 * parsers (320 KiB of source text alone) in an agent with 256 devices.
 */
import { config } from 'zod';

config({ jitless: true });
