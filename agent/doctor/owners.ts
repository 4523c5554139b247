/** User and group names for uids/gids (from /etc/passwd and /etc/group), for messages that say whom to add where. */
import { readFileSync } from 'node:fs';
import os from 'node:os';

function lookup(file: string, id: number): string | undefined {
  try {
    const line = readFileSync(file, 'utf8')
      .split('\n')
      .find((l) => l.split(':')[2] === String(id));
    return line?.split(':')[0] || undefined;
  } catch {
    return undefined;
  }
}

export function userName(uid: number): string {
  return lookup('/etc/passwd', uid) ?? `uid ${uid}`;
}

export function groupName(gid: number): string {
  return lookup('/etc/group', gid) ?? `gid ${gid}`;
}

/** The user running doctor, by name. */
export function currentUser(): string {
  try {
    return os.userInfo().username;
  } catch {
    return process.getuid ? userName(process.getuid()) : 'this user';
  }
}

/** Whether the current process is in group `gid` (primary or supplementary). */
export function inGroup(gid: number): boolean {
  if (process.getgid?.() === gid) return true;
  return process.getgroups?.().includes(gid) ?? false;
}
