/**
 * Checks of the machine and the files the agent owns: Node version and
 * architecture, the state directories (writable, or creatable, by this user),
 * and the config file's mode and owner (it can hold passwords).
 */
import { constants, promises as fsp } from 'node:fs';
import { dirname, resolve } from 'node:path';
import type { AgentConfig } from '../config.js';
import { currentUser, groupName, userName } from './owners.js';
import { errnoOf, fail, octal, pass, warn, type CheckResult } from './types.js';

export const MIN_NODE_MAJOR = 20;
/** Architectures the native modules (koffi, serialport, epoll) ship builds for. */
const KNOWN_ARCHES = ['x64', 'arm64', 'arm'];

export function checkNode(version = process.versions.node, arch: string = process.arch, platform: string = process.platform): CheckResult {
  const major = Number(version.split('.')[0]);
  const where = `${platform} ${arch}`;
  if (!Number.isInteger(major) || major < MIN_NODE_MAJOR) {
    return fail('node', `Node.js v${version} on ${where}: rackpilot needs Node.js ${MIN_NODE_MAJOR} or newer; install a current LTS (e.g. from NodeSource or the official tarball)`, { version, arch });
  }
  if (!KNOWN_ARCHES.includes(arch)) {
    return warn('node', `Node.js v${version} on ${where}: an architecture rackpilot is not tested on (${KNOWN_ARCHES.join(', ')}); native modules (koffi, serialport, epoll) may not load`, { version, arch });
  }
  return pass('node', `Node.js v${version} on ${where}`, { version, arch });
}

/** A directory the agent writes: writable by this user, or (missing) creatable under its nearest existing parent. */
export async function checkWritableDir(name: string, dir: string, configKey: string): Promise<CheckResult> {
  const user = currentUser();
  const abs = resolve(dir);
  const fix = `create it for the agent's user: "install -d -m 750 -o ${user} ${abs}" (or set ${configKey})`;
  try {
    const st = await fsp.stat(abs);
    if (!st.isDirectory()) return fail(name, `${abs} exists but is not a directory: ${fix}`, { path: abs });
    try {
      await fsp.access(abs, constants.W_OK | constants.X_OK);
    } catch (err) {
      return fail(name, `${abs} is not writable by ${user} (${errnoOf(err) ?? 'error'}; owner ${userName(st.uid)}:${groupName(st.gid)}, mode ${octal(st.mode)}): "chown ${user} ${abs}", or run the agent as its owner`, { path: abs });
    }
    return pass(name, `${abs} is writable by ${user}`, { path: abs });
  } catch (err) {
    if (errnoOf(err) !== 'ENOENT') return fail(name, `cannot inspect ${abs} (${errnoOf(err) ?? String(err)}): ${fix}`, { path: abs });
  }
  // missing: the agent creates it (mkdir -p) when it can write the nearest existing parent
  let parent = dirname(abs);
  for (;;) {
    try {
      const st = await fsp.stat(parent);
      if (!st.isDirectory()) return fail(name, `${abs} does not exist and ${parent} is not a directory: ${fix}`, { path: abs });
      await fsp.access(parent, constants.W_OK | constants.X_OK);
      return pass(name, `${abs} does not exist yet; ${user} can create it (in ${parent})`, { path: abs });
    } catch (err) {
      const code = errnoOf(err);
      if (code === 'ENOENT' && parent !== dirname(parent)) {
        parent = dirname(parent);
        continue;
      }
      return fail(name, `${abs} does not exist and ${user} cannot create it (${parent}: ${code ?? 'error'}): ${fix}`, { path: abs });
    }
  }
}

/** The state directory and any evidence/spool directory configured elsewhere. */
export async function checkStateDirs(config: AgentConfig): Promise<CheckResult[]> {
  const dirs: [string, string, string][] = [['state dir', config.stateDir, 'stateDir']];
  if (config.evidence.dir !== undefined) dirs.push(['evidence dir', config.evidence.dir, 'evidence.dir']);
  if (config.spool.dir !== undefined) dirs.push(['spool dir', config.spool.dir, 'spool.dir']);
  const rows = await Promise.all(dirs.map(([name, dir, key]) => checkWritableDir(name, dir, key)));
  const contents = await Promise.all(dirs.map(([name, dir]) => checkContents(name, dir)));
  return [...rows, ...contents.filter((r): r is CheckResult => r !== null)];
}

/** How deep and how many entries the contents check looks at (spool segments, evidence files). */
const CONTENT_DEPTH = 3;
const CONTENT_MAX_ENTRIES = 20_000;

/**
 * What the agent writes inside a state directory (engine-state.json, spool/,
 * evidence/) must be writable by it too: files left by a run as root (e.g.
 * `rackpilot run` by hand) would stop the service from saving its state.
 * Returns null when the directory does not exist yet or everything is fine.
 */
async function checkContents(name: string, dir: string): Promise<CheckResult | null> {
  const abs = resolve(dir);
  const bad: string[] = [];
  let seen = 0;
  const walk = async (d: string, depth: number): Promise<void> => {
    let entries;
    try {
      entries = await fsp.readdir(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      if (++seen > CONTENT_MAX_ENTRIES || bad.length >= 5) return;
      const p = resolve(d, e.name);
      try {
        await fsp.access(p, constants.W_OK);
      } catch {
        const st = await fsp.stat(p).catch(() => null);
        bad.push(st ? `${p} (owner ${userName(st.uid)}:${groupName(st.gid)}, mode ${octal(st.mode & 0o777)})` : p);
      }
      if (e.isDirectory() && depth < CONTENT_DEPTH) await walk(p, depth + 1);
    }
  };
  await walk(abs, 1);
  if (bad.length === 0) return null;
  return fail(`${name} contents`, `not writable by ${currentUser()}: ${bad.join(', ')}; the agent could not save its state there: run "chown -R ${currentUser()}: ${abs}" (install.sh does this)`, { path: abs, entries: bad.join(", ") });
}

/**
 * The config file can hold passwords and keys: readable by everyone is a
 * warning, writable by others (who could then steer the rack) a failure,
 * and so is an owner other than root or this user.
 */
export async function checkConfigFile(file: string): Promise<CheckResult> {
  const name = 'config file';
  let st;
  try {
    st = await fsp.stat(file);
  } catch (err) {
    return fail(name, `cannot stat ${file} (${errnoOf(err) ?? String(err)})`);
  }
  const mode = st.mode & 0o777;
  const owner = `${userName(st.uid)}:${groupName(st.gid)}`;
  const data = { mode: octal(mode), owner };
  const me = process.getuid?.();
  if ((mode & 0o002) !== 0) {
    return fail(name, `${file} is writable by every user (mode ${octal(mode)}, owner ${owner}): anyone could change what the agent does; run "chmod 640 ${file}"`, data);
  }
  if (st.uid !== 0 && me !== undefined && st.uid !== me) {
    return warn(name, `${file} is owned by ${userName(st.uid)} (mode ${octal(mode)}), neither root nor ${currentUser()}: that user can change what the agent does; run "chown root ${file}"`, data);
  }
  if ((mode & 0o004) !== 0) {
    return warn(name, `${file} is readable by every user (mode ${octal(mode)}, owner ${owner}) and can hold passwords: run "chmod 640 ${file}" and "chgrp <agent's group> ${file}"`, data);
  }
  if ((mode & 0o020) !== 0) {
    return warn(name, `${file} is writable by its group ${groupName(st.gid)} (mode ${octal(mode)}): run "chmod 640 ${file}" unless that group should edit it`, data);
  }
  return pass(name, `${file}: mode ${octal(mode)}, owner ${owner}`, data);
}
