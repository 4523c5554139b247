/**
 * install.sh into a temporary root (--root), from a bundle made by
 * scripts/bundle.sh (npm run bundle): files, modes, the commands it would run
 * for users and ownership, the unit checked by `systemd-analyze verify`, a
 * second run that changes nothing, upgrade, automatic rollback (a version
 * that fails its pre-flight check, one that fails to become ready), pruning,
 * uninstall with and without --purge, and refusal of a bundle built for
 * another architecture or Node ABI.
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startEmbeddedBroker } from '../agent/embedded-broker.js';
import { LOW_MEMORY_NODE_FLAGS } from '../agent/runtime.js';
import { fakeSystemctl } from '../hil/testing/fake-systemctl.js';
import { FakeNotifySocket } from '../hil/testing/notify-socket.js';
import { freePort } from '../hil/testing/ports.js';
import { startSimRack } from '../hil/testing/rack-fixture.js';
import { repoRoot } from '../hil/testing/root.js';
import { requireTool } from '../hil/testing/tools.js';

const repo = repoRoot();
const analyze = requireTool('systemd-analyze', 'systemd');
const python = requireTool('python3', 'python3');

/** A command prefix that runs without any network (a new network namespace), or null where namespaces are not allowed. */
function offline(): string[] | null {
  for (const args of [['-n'], ['-r', '-n']]) {
    if (spawnSync('unshare', [...args, 'true']).status === 0) return ['unshare', ...args];
  }
  return null;
}

interface Run {
  code: number;
  out: string;
  err: string;
}

function sh(args: string[], env: NodeJS.ProcessEnv = {}): Run {
  const r = spawnSync('bash', args, { encoding: 'utf8', env: { ...process.env, ...env } });
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
}

function mode(p: string): string {
  return (statSync(p).mode & 0o7777).toString(8);
}

/** Every path under `dir` with its type, mode, size, mtime and link target: equal snapshots mean nothing was touched. */
function snapshot(dir: string): string[] {
  const rows: string[] = [];
  const walk = (d: string): void => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      const s = lstatSync(p);
      const rel = p.slice(dir.length);
      if (s.isSymbolicLink()) rows.push(`${rel} -> ${readlinkSync(p)} ${s.mtimeMs}`);
      else rows.push(`${rel} ${(s.mode & 0o7777).toString(8)} ${s.size} ${s.mtimeMs}`);
      if (s.isDirectory()) walk(p);
    }
  };
  walk(dir);
  return rows;
}

describe('install.sh', () => {
  const work = mkdtempSync(join(tmpdir(), 'rp-install-'));
  let tarball: string;
  let base: string; // the bundle, unpacked
  let version: string;
  after(() => rmSync(work, { recursive: true, force: true }));

  before(() => {
    const out = execFileSync('bash', [join(repo, 'scripts', 'bundle.sh'), '--skip-build', '--out', join(work, 'release')], { encoding: 'utf8' });
    const m = /bundle: (\S+\.tar\.gz)/.exec(out);
    assert.ok(m?.[1], out);
    tarball = m[1];
    mkdirSync(join(work, 'unpacked'));
    execFileSync('tar', ['-xzf', tarball, '-C', join(work, 'unpacked')]);
    const [name] = readdirSync(join(work, 'unpacked'));
    base = join(work, 'unpacked', name!);
    version = (JSON.parse(readFileSync(join(base, 'BUNDLE.json'), 'utf8')) as { version: string }).version;
  });

  /** Another release, made from the unpacked bundle: same code, another version (and optionally a fault). */
  function variant(v: string, fault?: 'fail-ready' | 'broken-cli' | 'other-arch' | 'abi'): string {
    const dir = join(work, `variant-${v}-${fault ?? 'ok'}`);
    // hard links: cheap, and install.sh copies what it installs; a file a variant changes is unlinked first
    execFileSync('cp', ['-al', base, dir]);
    const put = (file: string, text: string): void => {
      rmSync(file, { force: true });
      writeFileSync(file, text);
    };
    const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as Record<string, unknown>;
    put(join(dir, 'package.json'), JSON.stringify({ ...pkg, version: v }));
    const b = JSON.parse(readFileSync(join(dir, 'BUNDLE.json'), 'utf8')) as Record<string, unknown>;
    const bundle: Record<string, unknown> = { ...b, version: v, buildId: `test-${v}-${fault ?? 'ok'}` };
    if (fault === 'other-arch') bundle.arch = 'riscv64';
    if (fault === 'abi') bundle.nodeAbi = '999';
    put(join(dir, 'BUNDLE.json'), JSON.stringify(bundle));
    if (fault === 'fail-ready') put(join(dir, 'FAIL_READY'), 'the fake systemctl never sees this version ready\n');
    if (fault === 'broken-cli') put(join(dir, 'dist', 'agent', 'cli.js'), 'process.stderr.write("boom: cannot load\\n"); process.exit(3);\n');
    return dir;
  }

  test('fresh install from the bundle into a temporary root: files, modes, would-run commands, a verified unit; a second run changes nothing', () => {
    const root = join(work, 'fresh');
    const r = sh([join(repo, 'install.sh'), '--bundle', tarball, '--root', root]);
    assert.equal(r.code, 0, r.err + r.out);
    const o = '/opt/rackpilot';
    assert.equal(readlinkSync(join(root, o, 'current')), version);
    assert.ok(existsSync(join(root, o, version, 'dist', 'agent', 'cli.js')));
    assert.ok(existsSync(join(root, o, version, 'node_modules', 'epoll', 'build', 'Release', 'epoll.node')), 'native bindings are in the bundle');
    assert.ok(!existsSync(join(root, o, version, 'dist', 'test')), 'tests are not shipped');
    // the agent runs as the esbuild bundle (scripts/bundle-agent.mjs): its entry imports chunks, not tsc's modules
    const entry = readFileSync(join(root, o, version, 'dist', 'agent', 'cli.js'), 'utf8');
    const chunks = [...entry.matchAll(/from\s*"\.\/(chunk-[A-Z0-9]+\.js)"/g)].map((m) => m[1] as string);
    assert.ok(chunks.length > 0, 'the installed cli.js is the bundle');
    for (const c of chunks) assert.ok(existsSync(join(root, o, version, 'dist', 'agent', c)), `bundle chunk ${c} is installed`);
    assert.doesNotMatch(entry, /from\s*["']\.\/service\.js["']/, 'not the unbundled tsc output');
    assert.equal(mode(join(root, 'etc/rackpilot')), '750');
    assert.equal(mode(join(root, 'etc/rackpilot/config.yaml')), '640');
    assert.equal(mode(join(root, 'etc/rackpilot/config.example.yaml')), '640');
    assert.equal(mode(join(root, 'var/lib/rackpilot')), '750');
    assert.equal(mode(join(root, 'etc/systemd/system/rackpilot.service')), '644');
    assert.equal(mode(join(root, 'usr/local/bin/rackpilot')), '755');
    assert.equal(readFileSync(join(root, 'etc/rackpilot/config.yaml'), 'utf8'), readFileSync(join(repo, 'examples', 'rack.yaml'), 'utf8'));
    assert.match(readFileSync(join(root, 'usr/local/bin/rackpilot'), 'utf8'), /exec \/\S+\/node "\/opt\/rackpilot\/current\/dist\/agent\/cli\.js" "\$@"/);
    // what needs a real system is printed, not run
    assert.match(r.out, /skipped \(--root\): useradd --system --user-group .* rackpilot/);
    assert.match(r.out, /skipped \(--root\): usermod --append --groups dialout rackpilot/);
    assert.match(r.out, /skipped \(--root\): chown -R rackpilot:rackpilot \S+\/var\/lib\/rackpilot/);
    assert.match(r.out, /skipped \(--root\): chown root:rackpilot \S+\/etc\/rackpilot\/config\.yaml/);
    // the installed agent runs and accepts its example config
    const cli = join(root, o, 'current', 'dist', 'agent', 'cli.js');
    assert.equal(execFileSync(process.execPath, [cli, '--version'], { encoding: 'utf8' }).trim(), version);
    const check = spawnSync(process.execPath, [cli, 'config', 'check', join(root, 'etc/rackpilot/config.yaml')], { encoding: 'utf8' });
    assert.equal(check.status, 0, check.stderr);

    const unit = readFileSync(join(root, 'etc/systemd/system/rackpilot.service'), 'utf8');
    for (const line of [
      'Type=notify',
      'WatchdogSec=10s',
      'Restart=always',
      'ProtectSystem=strict',
      'ReadWritePaths=/var/lib/rackpilot',
      'NoNewPrivileges=yes',
      'CapabilityBoundingSet=',
      'User=rackpilot',
      'ExecReload=/bin/kill -HUP $MAINPID',
    ]) {
      assert.ok(unit.split('\n').includes(line), `unit has ${line}`);
    }
    assert.match(unit, /^ExecStart=\/\S+\/node \$RACKPILOT_NODE_FLAGS \/opt\/rackpilot\/current\/dist\/agent\/cli\.js run --config \/etc\/rackpilot\/config\.yaml$/m);
    // the service runs the low-memory profile unless the operator empties the flags
    const defaults = readFileSync(join(root, 'etc/default/rackpilot'), 'utf8');
    assert.deepEqual(/^RACKPILOT_NODE_FLAGS=(.*)$/m.exec(defaults)?.[1]?.split(' '), [...LOW_MEMORY_NODE_FLAGS]);
    assert.equal(statSync(join(root, 'etc/default/rackpilot')).mode & 0o777, 0o644);
    if ('path' in analyze) {
      const v = spawnSync(analyze.path, ['verify', join(root, 'etc/systemd/system/rackpilot.service')], { encoding: 'utf8' });
      assert.equal(v.status, 0, v.stderr);
      assert.equal(v.stderr.trim(), '', 'systemd-analyze verify has nothing to say about the unit');
    }

    const before = snapshot(root);
    const again = sh([join(repo, 'install.sh'), '--bundle', tarball, '--root', root]);
    assert.equal(again.code, 0, again.err);
    assert.match(again.out, /nothing to change/);
    assert.deepEqual(snapshot(root), before, 'the second run touched nothing');

    // an edited config is never overwritten
    writeFileSync(join(root, 'etc/rackpilot/config.yaml'), 'site: edited\n');
    assert.equal(sh([join(repo, 'install.sh'), '--bundle', tarball, '--root', root]).code, 0);
    assert.equal(readFileSync(join(root, 'etc/rackpilot/config.yaml'), 'utf8'), 'site: edited\n');
  });

  test('upgrade keeps the previous version; a release failing its pre-flight or its start is rolled back; old versions are pruned', () => {
    const root = join(work, 'upgrade');
    mkdirSync(root);
    const sc = fakeSystemctl(work, root);
    const install = (dir: string): Run => sh([join(dir, 'install.sh'), '--root', root, '--systemctl', sc.path]);
    const current = (): string => readlinkSync(join(root, 'opt/rackpilot/current'));

    let r = install(variant('1.0.0'));
    assert.equal(r.code, 0, r.err + r.out);
    assert.match(r.out, /not started: edit \/etc\/rackpilot\/config\.yaml/, 'the untouched example config is not started');
    assert.ok(sc.calls().includes('daemon-reload'));
    assert.ok(sc.calls().includes('enable rackpilot.service'));
    assert.equal(sc.active(), false);
    // the operator edits the config, then starts it: the next install restarts into each new version
    writeFileSync(join(root, 'etc/rackpilot/config.yaml'), readFileSync(join(repo, 'examples', 'minimal.yaml')));

    r = install(variant('1.1.0'));
    assert.equal(r.code, 0, r.err + r.out);
    assert.equal(current(), '1.1.0');
    assert.equal(readlinkSync(join(root, 'opt/rackpilot/previous')), '1.0.0');
    assert.ok(sc.active(), 'restarted and ready');
    assert.ok(existsSync(join(root, 'opt/rackpilot/1.0.0')), 'the previous version is kept');

    // a release that does not load: nothing switched, nothing restarted
    const restartsBefore = sc.calls().filter((c) => c.startsWith('restart')).length;
    r = install(variant('1.2.0', 'broken-cli'));
    assert.notEqual(r.code, 0);
    assert.match(r.err, /version 1\.2\.0 failed its pre-flight check: rackpilot --version failed: boom: cannot load.*1\.1\.0 stays current/s);
    assert.equal(current(), '1.1.0');
    assert.ok(!existsSync(join(root, 'opt/rackpilot/1.2.0')), 'the broken release is not left installed');
    assert.equal(sc.calls().filter((c) => c.startsWith('restart')).length, restartsBefore);

    // a release that a config change makes unusable: the new version rejects the config in place
    const cfg = readFileSync(join(root, 'etc/rackpilot/config.yaml'), 'utf8');
    writeFileSync(join(root, 'etc/rackpilot/config.yaml'), `${cfg}\nunknownKey: 1\n`);
    r = install(variant('1.2.1'));
    assert.notEqual(r.code, 0);
    assert.match(r.err, /it rejects \/etc\/rackpilot\/config\.yaml/);
    assert.equal(current(), '1.1.0');
    writeFileSync(join(root, 'etc/rackpilot/config.yaml'), cfg);

    // a release that starts but never becomes ready: rolled back and the previous one restarted
    r = install(variant('1.3.0', 'fail-ready'));
    assert.notEqual(r.code, 0);
    assert.match(r.out, /version 1\.3\.0 failed to become ready: rolled back to 1\.1\.0/);
    assert.match(r.err, /upgrade to 1\.3\.0 failed; 1\.1\.0 is running again/);
    assert.equal(current(), '1.1.0');
    assert.ok(sc.active(), 'the previous version runs again');

    r = install(variant('2.0.0'));
    assert.equal(r.code, 0, r.err + r.out);
    assert.equal(current(), '2.0.0');
    assert.equal(readlinkSync(join(root, 'opt/rackpilot/previous')), '1.1.0');
    const left = readdirSync(join(root, 'opt/rackpilot')).filter((n) => !n.startsWith('.')).sort();
    assert.deepEqual(left, ['1.1.0', '2.0.0', 'current', 'previous'], 'only the current and previous versions are kept');
    assert.equal(readFileSync(join(root, 'opt/rackpilot/.started'), 'utf8').trim(), '2.0.0', 'what the service was started with is recorded');

    // a rebuilt bundle of the running version goes to its own directory, so a failing rebuild rolls back to the running build
    const rebuilt = variant('2.0.0', 'fail-ready');
    r = install(rebuilt);
    assert.notEqual(r.code, 0);
    assert.match(r.out, /installed \/opt\/rackpilot\/2\.0\.0\+test-2\.0\.0-/);
    assert.match(r.out, /version 2\.0\.0\+test-2\.0\.0-\S* failed to become ready: rolled back to 2\.0\.0/);
    assert.equal(current(), '2.0.0');
    assert.ok(sc.active(), 'the running build runs again');

    // installed with --no-start, then a plain run: the service is restarted into what `current` is
    r = sh([join(variant('2.1.0'), 'install.sh'), '--root', root, '--systemctl', sc.path, '--no-start']);
    assert.equal(r.code, 0, r.err + r.out);
    assert.equal(current(), '2.1.0');
    assert.equal(readFileSync(join(root, 'opt/rackpilot/.started'), 'utf8').trim(), '2.0.0', 'still running 2.0.0');
    r = sh([join(variant('2.2.0'), 'install.sh'), '--root', root, '--systemctl', sc.path, '--no-start']);
    assert.equal(r.code, 0, r.err + r.out);
    assert.ok(existsSync(join(root, 'opt/rackpilot/2.0.0')), 'the version the service runs is never pruned, even when neither current nor previous');
    const before = sc.calls().filter((c) => c.startsWith('restart')).length;
    r = install(join(work, 'variant-2.2.0-ok'));
    assert.equal(r.code, 0, r.err + r.out);
    assert.equal(sc.calls().filter((c) => c.startsWith('restart')).length, before + 1, 'restarted into 2.2.0');
    assert.equal(readFileSync(join(root, 'opt/rackpilot/.started'), 'utf8').trim(), '2.2.0');
    assert.ok(!existsSync(join(root, 'opt/rackpilot/2.0.0')), 'then the old one goes');
    // an interrupted copy left behind is cleaned up by the next run
    mkdirSync(join(root, 'opt/rackpilot/.9.9.9.new.12345'));
    r = install(join(work, 'variant-2.2.0-ok'));
    assert.equal(r.code, 0, r.err + r.out);
    assert.ok(!existsSync(join(root, 'opt/rackpilot/.9.9.9.new.12345')));
    assert.match(r.out, /left by an interrupted install/);
    // a file that cannot be written fails the install instead of being reported as written
    r = sh([join(base, 'install.sh'), '--root', join(work, 'no-tmp')], { TMPDIR: '/nonexistent/dir' });
    assert.notEqual(r.code, 0);
    assert.match(r.err, /cannot create a temporary file \(TMPDIR=\/nonexistent\/dir\)/);
    assert.doesNotMatch(r.out, /wrote \/usr\/local\/bin\/rackpilot/);

    // uninstall keeps config and state; --purge removes them and names the user removal it would run
    r = sh([join(repo, 'install.sh'), '--uninstall', '--root', root, '--systemctl', sc.path]);
    assert.equal(r.code, 0, r.err);
    assert.ok(sc.calls().includes('disable --now rackpilot.service'));
    assert.ok(!existsSync(join(root, 'opt/rackpilot')));
    assert.ok(!existsSync(join(root, 'usr/local/bin/rackpilot')));
    assert.ok(!existsSync(join(root, 'etc/systemd/system/rackpilot.service')));
    assert.ok(existsSync(join(root, 'etc/rackpilot/config.yaml')));
    assert.ok(existsSync(join(root, 'var/lib/rackpilot')));
    assert.match(r.out, /kept \/etc\/rackpilot \/var\/lib\/rackpilot \/etc\/default\/rackpilot/);
    r = sh([join(repo, 'install.sh'), '--uninstall', '--purge', '--root', root]);
    assert.equal(r.code, 0, r.err);
    assert.ok(!existsSync(join(root, 'etc/rackpilot')));
    assert.ok(!existsSync(join(root, 'var/lib/rackpilot')));
    assert.match(r.out, /skipped \(--root\): userdel rackpilot/);
    r = sh([join(repo, 'install.sh'), '--uninstall', '--root', root]);
    assert.match(r.out, /not installed: nothing to remove/);
  });

  test('offline: the bundle installs with no network at all, the installed agent starts (READY=1) and rackpilot doctor passes from it', { skip: 'skip' in python ? python.skip : false }, async (t) => {
    const root = join(work, 'offline');
    const ns = offline();
    if (!ns) t.diagnostic('unshare cannot make a network namespace here: installing with the registry pointed at a closed port instead');
    const cmd = [...(ns ?? []), 'bash', join(repo, 'install.sh'), '--bundle', tarball, '--root', root];
    const r = spawnSync(cmd[0]!, cmd.slice(1), { encoding: 'utf8', env: { ...process.env, npm_config_registry: 'http://127.0.0.1:9/', npm_config_offline: 'true' } });
    assert.equal(r.status, 0, r.stderr + r.stdout);
    if (ns) {
      const probe = spawnSync(ns[0]!, [...ns.slice(1), 'node', '-e', 'require("node:net").connect(9, "127.0.0.1").on("error", (e) => { console.log(e.code); })'], { encoding: 'utf8' });
      assert.match(probe.stdout, /ENETUNREACH|ECONNREFUSED|EADDRNOTAVAIL/, 'the namespace really has no network');
    }

    // the operator writes the config: a simulated miner and a broker on loopback
    const broker = await startEmbeddedBroker('127.0.0.1', await freePort());
    const rack = await startSimRack(1, { sleepDelayMs: 50, wakeRampMs: 50 });
    const notify = await FakeNotifySocket.start('path' in python ? python.path : 'python3');
    const cfg = join(root, 'etc/rackpilot/config.yaml');
    writeFileSync(cfg, JSON.stringify({ ...rack.raw(broker.url, 'off', 'r1'), mqtt: { url: broker.url, protocolVersion: 4 }, stateDir: join(root, 'var/lib/rackpilot') }));
    const cli = join(root, 'opt/rackpilot/current/dist/agent/cli.js');
    const agent = spawn(process.execPath, [cli, 'run', '--config', cfg], { env: { ...process.env, NOTIFY_SOCKET: notify.path, WATCHDOG_USEC: '2000000' }, stdio: 'ignore' });
    try {
      await notify.waitFor('READY=1 from the installed agent', (n) => n.some((x) => x.msg.split('\n').includes('READY=1')));
      await notify.waitFor('a watchdog ping', (n) => n.some((x) => x.msg === 'WATCHDOG=1'));
      // asynchronously: the broker and the simulator answer from this process's event loop
      const doc = await new Promise<{ status: number | null; stdout: string; stderr: string }>((res) => {
        execFile(process.execPath, [cli, 'doctor', '--config', cfg, '--timeout', '3000'], { encoding: 'utf8' }, (err, stdout, stderr) =>
          res({ status: err ? ((err as { code?: number }).code ?? -1) : 0, stdout, stderr }),
        );
      });
      assert.equal(doc.status, 0, doc.stdout + doc.stderr);
      assert.match(doc.stdout, /PASS\s+broker/);
      assert.match(doc.stdout, /PASS\s+device m1/);
    } finally {
      agent.kill('SIGTERM');
      await new Promise((res) => agent.once('exit', res));
      notify.close();
      await rack.close();
      await broker.close();
    }
  });

  test('--prefix puts the versions elsewhere and the unit and command follow; --no-start starts nothing', () => {
    const root = join(work, 'prefix');
    mkdirSync(root);
    const sc = fakeSystemctl(join(work, 'prefix-sc'), root, '/srv/rackpilot');
    const r = sh([join(base, 'install.sh'), '--root', root, '--prefix', '/srv/rackpilot', '--systemctl', sc.path, '--no-start']);
    assert.equal(r.code, 0, r.err + r.out);
    assert.equal(readlinkSync(join(root, 'srv/rackpilot/current')), version);
    assert.ok(!existsSync(join(root, 'opt/rackpilot')));
    assert.match(readFileSync(join(root, 'etc/systemd/system/rackpilot.service'), 'utf8'), /^ExecStart=\S+ \$RACKPILOT_NODE_FLAGS \/srv\/rackpilot\/current\/dist\/agent\/cli\.js run /m);
    assert.match(readFileSync(join(root, 'usr/local/bin/rackpilot'), 'utf8'), /"\/srv\/rackpilot\/current\/dist\/agent\/cli\.js"/);
    assert.match(r.out, /not started \(--no-start\)/);
    assert.ok(sc.calls().includes('enable rackpilot.service'));
    assert.ok(!sc.calls().some((c) => /^(re)?start/.test(c)), 'nothing started');
    assert.match(sh([join(base, 'install.sh'), '--root', root, '--prefix', 'relative/dir']).err, /--prefix must be an absolute path/);
    // uninstall finds the prefix in the unit and removes only what install.sh put there
    writeFileSync(join(root, 'srv/rackpilot/notes.txt'), 'the operator\'s file\n');
    const u = sh([join(repo, 'install.sh'), '--uninstall', '--root', root, '--systemctl', sc.path]);
    assert.equal(u.code, 0, u.err);
    assert.ok(!existsSync(join(root, 'srv/rackpilot/current')));
    assert.ok(!existsSync(join(root, 'srv/rackpilot', version)));
    assert.ok(existsSync(join(root, 'srv/rackpilot/notes.txt')), 'a file install.sh did not put there stays');
    assert.match(u.out, /kept \/srv\/rackpilot: it holds files install\.sh did not put there/);
  });

  test('a bundle for another architecture or Node ABI is refused with what to do', () => {
    const root = join(work, 'refuse');
    let r = sh([join(variant('3.0.0', 'other-arch'), 'install.sh'), '--root', root]);
    assert.notEqual(r.code, 0);
    assert.ok(r.err.includes(`the bundle is for riscv64 but this machine runs ${process.arch}`), r.err);
    assert.ok(r.err.includes(`build the bundle on a ${process.arch} machine`), r.err);
    r = sh([join(variant('3.0.1', 'abi'), 'install.sh'), '--root', root]);
    assert.notEqual(r.code, 0);
    assert.match(r.err, /built for Node ABI 999 .* but \S+ is \d+\.\d+\.\d+ \(ABI \d+\)/);
    const old = join(work, 'node18');
    writeFileSync(old, '#!/bin/sh\necho 18.19.0\n', { mode: 0o755 });
    r = sh([join(repo, 'install.sh'), '--root', root, '--node', old]);
    assert.match(r.err, /Node\.js >= 20 is required, \S+node18 is 18\.19\.0/);
    r = sh([join(repo, 'install.sh'), '--root', root, '--node', '/nonexistent/node']);
    assert.match(r.err, /--node \/nonexistent\/node is not executable/);
    r = sh([join(variant('current'), 'install.sh'), '--root', root]);
    assert.match(r.err, /bundle has a bad version "current"/);
    r = sh([join(repo, 'install.sh'), '--bogus']);
    assert.match(r.err, /unknown option "--bogus"/);
    assert.ok(!existsSync(join(root, 'opt/rackpilot/3.0.0')));
  });
});
