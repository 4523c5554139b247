/**
 * Serial ports of Modbus RTU devices (any device block with `serial.path`,
 * the shared serialSchema of drivers/lib/transports.ts): the path exists, is
 * a character device, and this user can read and write it; if not, which
 * group to join.
 */
import { constants, promises as fsp } from 'node:fs';
import type { DeviceConfig } from '../config.js';
import { currentUser, groupName, inGroup, userName } from './owners.js';
import { errnoOf, fail, octal, pass, skip, type CheckResult } from './types.js';

function serialPath(d: DeviceConfig): string | undefined {
  const s = (d as { serial?: { path?: unknown } }).serial;
  return typeof s?.path === 'string' ? s.path : undefined;
}

export async function checkSerialPort(name: string, path: string): Promise<CheckResult> {
  let st;
  try {
    st = await fsp.stat(path);
  } catch (err) {
    const code = errnoOf(err);
    if (code === 'ENOENT') return fail(name, `${path} does not exist: is the USB-serial adapter plugged in? "ls -l /dev/serial/by-id/" lists the adapters (use that stable path in serial.path)`, { path });
    return fail(name, `cannot stat ${path} (${code ?? String(err)})`, { path });
  }
  if (!st.isCharacterDevice()) return fail(name, `${path} is not a character device (a serial port is one, e.g. /dev/ttyUSB0): check serial.path`, { path });
  const owner = `${userName(st.uid)}:${groupName(st.gid)}`;
  try {
    await fsp.access(path, constants.R_OK | constants.W_OK);
  } catch (err) {
    const user = currentUser();
    const group = groupName(st.gid);
    const hint =
      st.gid !== 0 && (st.mode & 0o060) === 0o060
        ? inGroup(st.gid)
          ? `${user} is in group "${group}" but this session is not yet: log in again (or restart the agent)`
          : `add the agent's user to group "${group}": "usermod -aG ${group} ${user}", then restart the agent`
        : `only ${userName(st.uid)} may use it: add a udev rule giving group "dialout" read/write access, and add the agent's user to "dialout"`;
    return fail(name, `${path} is not readable and writable by ${user} (${errnoOf(err) ?? 'error'}; owner ${owner}, mode ${octal(st.mode)}): ${hint}`, { path, owner, mode: octal(st.mode) });
  }
  return pass(name, `${path}: character device, readable and writable by ${currentUser()} (owner ${owner}, mode ${octal(st.mode)})`, { path });
}

export async function checkSerial(devices: readonly DeviceConfig[]): Promise<CheckResult[]> {
  const ports = devices.flatMap((d) => {
    const p = serialPath(d);
    return p === undefined ? [] : [{ id: d.id, path: p }];
  });
  if (ports.length === 0) return [skip('serial', 'no serial (Modbus RTU) devices configured')];
  return Promise.all(ports.map((p) => checkSerialPort(`serial ${p.id}`, p.path)));
}
