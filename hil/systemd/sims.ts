/**
 * Two (or more) LuxOS simulators and an embedded MQTT broker on loopback,
 * for hil/systemd/run.sh: `node dist/hil/systemd/sims.js BROKER_PORT SIM_PORT...`.
 * Prints "ready URL", then every 500 ms which simulators are asleep.
 */
import { startEmbeddedBroker } from '../../agent/embedded-broker.js';
import { LuxosSim } from '../sim/luxos-sim.js';

const [brokerPort, ...simPorts] = process.argv.slice(2).map(Number);
if (brokerPort === undefined || simPorts.length === 0) {
  process.stderr.write('usage: sims.js BROKER_PORT SIM_PORT...\n');
  process.exit(2);
}
const broker = await startEmbeddedBroker('127.0.0.1', brokerPort);
const sims: LuxosSim[] = [];
for (const port of simPorts) {
  const s = new LuxosSim({ port, sleepDelayMs: 200, wakeRampMs: 200, miningW: 3000 });
  await s.listen();
  sims.push(s);
}
process.stdout.write(`ready ${broker.url}\n`);
setInterval(() => process.stdout.write(`sleeping ${sims.map((s) => s.sleeping).join(',')}\n`), 500);
