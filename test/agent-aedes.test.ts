import { startEmbeddedBroker, type EmbeddedBroker } from '../agent/embedded-broker.js';
import { freePort } from '../hil/testing/ports.js';
import { agentSuite } from '../hil/testing/agent-suite.js';

let port = 0;
let broker: EmbeddedBroker | undefined;

agentSuite({
  name: 'aedes',
  expectVersion: 4,
  url: () => `mqtt://127.0.0.1:${port}`,
  start: async () => {
    if (port === 0) port = await freePort();
    broker = await startEmbeddedBroker('127.0.0.1', port);
  },
  stop: async () => {
    await broker?.close();
    broker = undefined;
  },
  dispose: async () => {
    await broker?.close();
    broker = undefined;
  },
});
