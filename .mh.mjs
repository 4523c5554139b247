const h = () => { gc(); gc(); return process.memoryUsage().heapUsed / 1048576; };
let prev = h();
for (const m of process.argv.slice(2)) { await import(m); const now = h(); console.log((now - prev).toFixed(2).padStart(6), m); prev = now; }
