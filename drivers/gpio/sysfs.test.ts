/**
 * The onoff path without hardware: line resolution against a fake sysfs
 * tree, and the errors for a missing /sys/class/gpio and for EACCES.
 */
import assert from 'node:assert/strict';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { runAsNobody } from '../../hil/testing/as-nobody.js';
import { expectCode } from '../../hil/testing/expect-code.js';
import { resolveLine } from './backend.js';
import { OnoffBackend } from './onoff.js';
import { checkAccess, readChips } from './sysfs.js';

const roots: string[] = [];
after(() => {
  for (const r of roots) rmSync(r, { recursive: true, force: true });
});

/** A sysfs tree like a Pi 4 on Bookworm: the SoC chip at 512 (58 lines) and the expander at 570. */
function fakeSysfs(opts: { gpio?: boolean } = {}): string {
  const root = mkdtempSync(join(tmpdir(), 'rp-sysfs-'));
  roots.push(root);
  chmodSync(root, 0o755);
  if (opts.gpio === false) return root;
  const dir = join(root, 'class', 'gpio');
  mkdirSync(dir, { recursive: true });
  for (const d of [join(root, 'class'), dir]) chmodSync(d, 0o755);
  writeFileSync(join(dir, 'export'), '');
  writeFileSync(join(dir, 'unexport'), '');
  for (const [name, label, base, n] of [
    ['gpiochip512', 'pinctrl-bcm2711', 512, 58],
    ['gpiochip570', 'raspberrypi-exp-gpio', 570, 8],
  ] as const) {
    mkdirSync(join(dir, name));
    writeFileSync(join(dir, name, 'label'), `${label}\n`);
    writeFileSync(join(dir, name, 'base'), `${base}\n`);
    writeFileSync(join(dir, name, 'ngpio'), `${n}\n`);
  }
  return root;
}

describe('line resolution against the sysfs tree', () => {
  test('chips are read by label, base and line count', async () => {
    const chips = await readChips(fakeSysfs());
    assert.deepEqual(chips, [
      { name: 'gpiochip512', label: 'pinctrl-bcm2711', base: 512, ngpio: 58 },
      { name: 'gpiochip570', label: 'raspberrypi-exp-gpio', base: 570, ngpio: 8 },
    ]);
  });

  test('chip label + offset resolve against the base (Bookworm numbers from 512)', async () => {
    const b = new OnoffBackend(fakeSysfs());
    assert.equal(await b.resolve({ chip: 'pinctrl-bcm2711', offset: 17 }), 529);
    assert.equal(await b.resolve({ chip: 'raspberrypi-exp-gpio', offset: 2 }), 572);
    assert.equal(await b.resolve({ line: 540 }), 540);
  });

  test('an unknown label lists the chips present; an offset out of range says the range', async () => {
    const b = new OnoffBackend(fakeSysfs());
    await expectCode(b.resolve({ chip: 'pinctrl-rp1', offset: 17 }), 'CONFIG_INVALID', /chip "pinctrl-rp1" not found; chips present: "pinctrl-bcm2711" \(gpiochip512, lines 512\.\.569\), "raspberrypi-exp-gpio"/);
    await expectCode(b.resolve({ chip: 'raspberrypi-exp-gpio', offset: 8 }), 'CONFIG_INVALID', /offset 8 is out of range.*offsets 0\.\.7/);
    await expectCode(b.resolve({ line: 17 }), 'CONFIG_INVALID', /line 17 belongs to no chip \(Bookworm kernels number from 512 up/);
    assert.throws(() => resolveLine([], { chip: 'x', offset: 0 }), /no GPIO chips are present/);
  });
});

describe('GPIO not accessible', () => {
  test('no /sys/class/gpio: the kernel lacks CONFIG_GPIO_SYSFS, or use another backend', async () => {
    const root = fakeSysfs({ gpio: false });
    const msg = /no sysfs GPIO interface at .*class\/gpio: the kernel lacks CONFIG_GPIO_SYSFS.*"backend: soft"/;
    await expectCode(checkAccess(root), 'UNSUPPORTED', msg);
    await expectCode(readChips(root), 'UNSUPPORTED', msg);
    await expectCode(new OnoffBackend(root).open(529, { direction: 'in', initial: 0 }), 'UNSUPPORTED', msg);
  });

  test('an exportable tree passes the access check', async () => {
    await checkAccess(fakeSysfs());
  });

  test('EACCES on export names the group to join, or says root is needed', async () => {
    const root = fakeSysfs();
    const exportPath = join(root, 'class', 'gpio', 'export');
    const isRoot = process.getuid?.() === 0;
    if (!isRoot) {
      chmodSync(exportPath, 0o444);
      const e = await expectCode(checkAccess(root), 'AUTH_FAILED', /permission denied on .*export: add the agent's user to group "[^"]+".*"gpio" group/);
      assert.equal(e.context.errno, 'EACCES');
      return;
    }
    // as root DAC checks never fail: ask an unprivileged child (uid/gid 65534) to check the same tree
    const groups = readFileSync('/etc/group', 'utf8').split('\n').map((l) => l.split(':'));
    const grp = groups.find((g) => g[0] === 'gpio') ?? groups.find((g) => g[0] === 'dialout') ?? groups.find((g) => g[2] !== '0' && g[2] !== '65534' && g[2]);
    assert.ok(grp?.[2], 'a group to own the fake export file');
    const check = (): { code: string; message: string } => {
      const r = runAsNobody(join(import.meta.dirname, 'sysfs.js'), 'checkAccess', [root]) as { error?: { code: string; message: string } };
      return r.error ?? { code: 'OK', message: '' };
    };
    chownSync(exportPath, 0, Number(grp[2]));
    chmodSync(exportPath, 0o220);
    const byGroup = check();
    assert.equal(byGroup.code, 'AUTH_FAILED');
    assert.match(byGroup.message, new RegExp(`permission denied on .*export: add the agent's user to group "${grp[0]}"`));
    chownSync(exportPath, 0, 0);
    const rootOnly = check();
    assert.equal(rootOnly.code, 'AUTH_FAILED');
    assert.match(rootOnly.message, /writable by root only: run the agent as root.*udev rule giving group "gpio" access/);
  });
});
