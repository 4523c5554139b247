/** Runs the signal-to-dispatch benchmark on its own: `node dist/hil/bench/engine-bench-main.js --devices 64 --trials 20`. */
import { runEngineBench } from './engine-bench.js';

process.exitCode = await runEngineBench(process.argv.slice(2));
