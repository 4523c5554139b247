import { Mosquitto } from '../hil/testing/mosquitto.js';
import { requireTool } from '../hil/testing/tools.js';
import { agentSuite } from '../hil/testing/agent-suite.js';

const tool = requireTool('mosquitto', 'mosquitto');
if ('skip' in tool) {
  agentSuite(tool);
} else {
  const m = new Mosquitto(tool.path);
  agentSuite({
    name: 'mosquitto',
    expectVersion: 5,
    url: () => m.url,
    start: () => m.start(),
    stop: () => m.stop(),
    dispose: () => m.dispose(),
  });
}
