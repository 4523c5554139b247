/**
 * A stand-in for systemctl in install.sh tests (`install.sh --root DIR
 * --systemctl FAKE`): it records every call and keeps enabled/active flags in
 * files. `restart`/`start` model Type=notify readiness: the unit becomes
 * active only if the version `current` links to runs (`--version`) and has
 * no FAIL_READY marker (a release that starts but never reports READY=1).
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface FakeSystemctl {
  path: string;
  /** The calls so far, one string of arguments each. */
  calls(): string[];
  active(): boolean;
}

export function fakeSystemctl(dir: string, root: string, prefix = '/opt/rackpilot'): FakeSystemctl {
  mkdirSync(dir, { recursive: true });
  const path = join(dir, 'systemctl');
  const log = join(dir, 'systemctl.log');
  const state = join(dir, 'systemctl.state');
  writeFileSync(
    path,
    `#!/usr/bin/env bash
echo "$*" >> ${JSON.stringify(log)}
state=${JSON.stringify(state)}
mkdir -p "$state"
args=()
for a in "$@"; do case "$a" in --*) ;; *) args+=("$a") ;; esac; done
case "\${args[0]}" in
  daemon-reload) exit 0 ;;
  enable) touch "$state/enabled"; exit 0 ;;
  disable) rm -f "$state/enabled" "$state/active"; exit 0 ;;
  is-enabled) [ -e "$state/enabled" ] ;;
  is-active) [ -e "$state/active" ] ;;
  start|restart)
    rm -f "$state/active"
    cur=${JSON.stringify(root + prefix)}/current
    [ -e "$cur/FAIL_READY" ] && { echo "Job for rackpilot.service failed (fake: FAIL_READY)" >&2; exit 1; }
    node "$cur/dist/agent/cli.js" --version >/dev/null || exit 1
    touch "$state/active" ;;
  stop) rm -f "$state/active" ;;
  *) echo "fake systemctl: unknown $*" >&2; exit 2 ;;
esac
`,
  );
  chmodSync(path, 0o755);
  return {
    path,
    calls: () => (existsSync(log) ? readFileSync(log, 'utf8').split('\n').filter(Boolean) : []),
    active: () => existsSync(join(state, 'active')),
  };
}
