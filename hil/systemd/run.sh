#!/usr/bin/env bash
# The installer and the service under a real systemd, on a bench machine.
#
#   sudo hil/systemd/run.sh [--bundle FILE.tar.gz]
#
# Boots systemd as PID 1 of a new PID + mount namespace (container mode) with
# copy-on-write overlays on /etc, /usr/local, /var and /opt (kept under
# $RP_SYSTEMD_WORK, default /root/rackpilot-systemd) and tmpfs on /tmp and
# /run, so nothing it installs reaches the machine's own files. Early-boot
# units that would touch the shared kernel, /dev or /tmp (tmpfiles, sysctl,
# udev, binfmt, modules, journald's /dev/log, ...) are masked. Then, against
# two LuxOS simulators and an embedded broker on loopback (this machine's
# network, ports 18830, 14030, 14031):
#   install.sh from the bundle (user, files, unit), rackpilot doctor as the
#   rackpilot user, systemctl start (Type=notify: returns on READY=1),
#   /healthz, a curtail command, reload (good and bad config), a stopped
#   process killed by the watchdog and restarted with the curtailment
#   re-asserted, an upgrade that never becomes ready (rolled back), a good
#   upgrade, systemd-analyze security, stop, uninstall --purge.
# Prints one PASS/FAIL line per check and exits non-zero on a failure. Needs
# root, unshare, overlayfs, systemd (the package; it need not be running),
# curl, mosquitto_pub, and a built checkout (npm ci && npm run build).
# Not part of npm test: it boots an init system.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bundle=""
while [ $# -gt 0 ]; do
  case "$1" in
    --bundle) bundle="$2"; shift 2 ;;
    -h|--help) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 2; }
for t in unshare nsenter curl mosquitto_pub /lib/systemd/systemd; do command -v "$t" >/dev/null || { echo "missing: $t" >&2; exit 2; }; done
[ -f "$here/dist/hil/systemd/sims.js" ] || { echo "build first: npm run build" >&2; exit 2; }
work="${RP_SYSTEMD_WORK:-/root/rackpilot-systemd}"
rm -rf "$work"
mkdir -p "$work"
if [ -z "$bundle" ]; then
  bash "$here/scripts/bundle.sh" --skip-build --out "$work/release" >/dev/null
  bundle="$(ls "$work"/release/rackpilot-*.tar.gz)"
fi

fails=0
check() { if [ "$1" = 0 ]; then echo "PASS  $2"; else echo "FAIL  $2"; fails=$((fails + 1)); fi; }

# ---- the namespace
cat > "$work/inner.sh" <<EOF
set -e
for d in etc usr/local var opt; do
  n=\$(echo \$d | tr / _)
  mkdir -p $work/ov/\$n/up $work/ov/\$n/work
  mount -t overlay overlay -o lowerdir=/\$d,upperdir=$work/ov/\$n/up,workdir=$work/ov/\$n/work /\$d
done
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs tmpfs /run
mkdir -p /run/systemd/system
printf '[Unit]\nDescription=rackpilot systemd bench\n' > /run/systemd/system/rp-bench.target
for u in systemd-tmpfiles-setup.service systemd-tmpfiles-setup-dev.service systemd-tmpfiles-clean.timer \
  systemd-sysctl.service systemd-binfmt.service proc-sys-fs-binfmt_misc.automount proc-sys-fs-binfmt_misc.mount \
  systemd-modules-load.service systemd-remount-fs.service systemd-udevd.service systemd-udev-trigger.service \
  systemd-udevd-control.socket systemd-udevd-kernel.socket systemd-sysusers.service systemd-random-seed.service \
  systemd-update-utmp.service sys-kernel-debug.mount sys-kernel-tracing.mount sys-kernel-config.mount \
  sys-fs-fuse-connections.mount dev-hugepages.mount dev-mqueue.mount systemd-firstboot.service \
  systemd-machine-id-commit.service ldconfig.service systemd-hwdb-update.service systemd-journal-catalog-update.service \
  systemd-pstore.service systemd-repart.service kmod-static-nodes.service systemd-boot-system-token.service \
  modprobe@.service systemd-fsck-root.service systemd-timesyncd.service e2scrub_reap.service \
  systemd-journald-dev-log.socket systemd-journald-audit.socket; do
  ln -sf /dev/null /run/systemd/system/\$u
done
export container=rackpilot-bench
exec /lib/systemd/systemd --system --unit=rp-bench.target
EOF
unshare --pid --fork --mount --mount-proc --propagation private bash "$work/inner.sh" > "$work/systemd.log" 2>&1 &
ns_parent=$!
node "$here/dist/hil/systemd/sims.js" 18830 14030 14031 > "$work/sims.log" 2>&1 &
sims=$!
cleanup() {
  kill "$sims" 2>/dev/null || true
  [ -z "${P:-}" ] || kill -9 "$P" 2>/dev/null || true
  kill "$ns_parent" 2>/dev/null || true
}
trap cleanup EXIT
P=""
for _ in $(seq 50); do P="$(pgrep -f 'systemd --system --unit=rp-bench.target' || true)"; [ -n "$P" ] && break; sleep 0.2; done
[ -n "$P" ] || { echo "systemd did not start: $(cat "$work/systemd.log")" >&2; exit 1; }
N=(nsenter -t "$P" -m -p --)
for _ in $(seq 50); do "${N[@]}" systemctl is-system-running >/dev/null 2>&1 && break; sleep 0.2; done
# from here on a failing step is a FAIL line and the checks go on (check counts them; the exit status says)
set +e
show() { "${N[@]}" systemctl show rackpilot -p "$1" --value; }
state() { curl -s 127.0.0.1:9108/metrics | grep -q '^rackpilot_rack_state{state="curtailed"} 1'; }

cat > "$work/config.yaml" <<'EOF'
site: bench
rack: r1
mqtt: { url: "mqtt://127.0.0.1:18830", protocolVersion: 4 }
poll: { intervalMs: 1000 }
devices:
  - { id: m1, driver: luxos, host: 127.0.0.1, port: 14030 }
  - { id: m2, driver: luxos, host: 127.0.0.1, port: 14031 }
EOF
put_config() { "${N[@]}" install -m 0640 -g rackpilot "$1" /etc/rackpilot/config.yaml; }

# ---- install, doctor, start
"${N[@]}" "$here/install.sh" --bundle "$bundle" > "$work/install-1.log" 2>&1; check $? "install.sh from the bundle (log: $work/install-1.log)"
"${N[@]}" id rackpilot | grep -q rackpilot; check $? "system user rackpilot created"
put_config "$work/config.yaml"
"${N[@]}" runuser -u rackpilot -- rackpilot doctor --timeout 3000 > "$work/doctor.log" 2>&1; check $? "rackpilot doctor passes as the rackpilot user"
t0=$(date +%s%N)
"${N[@]}" systemctl start rackpilot; check $? "systemctl start returns once the agent sent READY=1 ($(( ($(date +%s%N) - t0) / 1000000 )) ms)"
[ "$(show SubState)" = running ] && [ "$(show WatchdogUSec)" = 10s ]; check $? "running, WatchdogSec 10s, under the hardened unit"
pid=$(show MainPID)
# field 19 of /proc/PID/stat is the nice value (the command name, field 2, is "node": no spaces). The
# OOMScoreAdjust setting is checked as systemd reads it: systemd in this PID namespace leaves the
# process's oom_score_adj at 0 (it is applied on a host)
nice=$("${N[@]}" cat "/proc/$pid/stat" 2>&1 | awk '{print $19}' || true) oom=$(show OOMScoreAdjust)
if [ "$nice" = -10 ] && [ "$oom" = -500 ]; then check 0 "the agent runs at nice -10; OOMScoreAdjust -500"; else check 1 "the agent runs at nice -10; OOMScoreAdjust -500 (nice $nice, OOMScoreAdjust $oom)"; fi
curl -sf 127.0.0.1:9108/healthz | grep -q '"ready":true'; check $? "/healthz ready"
mosquitto_pub -p 18830 -t rackpilot/v1/bench/r1/cmd -m '{"id":"b-1","command":"curtail"}'
sleep 2
state && tail -1 "$work/sims.log" | grep -q 'sleeping true,true'; check $? "curtail over MQTT: both simulators asleep, state curtailed"
"${N[@]}" test -s /var/lib/rackpilot/engine-state.json; check $? "state persisted in /var/lib/rackpilot (ProtectSystem=strict + ReadWritePaths)"

# ---- reload
sed 's/intervalMs: 1000/intervalMs: 1500/' "$work/config.yaml" > "$work/config2.yaml"
put_config "$work/config2.yaml"
pid=$(show MainPID)
"${N[@]}" systemctl reload rackpilot; sleep 2
[ "$(show MainPID)" = "$pid" ] && state && "${N[@]}" journalctl -u rackpilot -o cat | grep -q 'config reloaded: agent restarted with it'; check $? "reload with a changed config: same process, still curtailed"
printf 'site: bench\nrack: r1\npoll: { intervalMs: -1 }\n' > "$work/bad.yaml"
put_config "$work/bad.yaml"
"${N[@]}" systemctl reload rackpilot; sleep 1
show StatusText | grep -q 'last reload rejected' && [ "$(show SubState)" = running ]; check $? "reload with a bad config: rejected, still running ($(show StatusText))"
put_config "$work/config.yaml"

# ---- watchdog
pid=$(show MainPID)
"${N[@]}" kill -STOP "$pid"
for _ in $(seq 40); do [ "$(show NRestarts)" = 1 ] && [ "$(show SubState)" = running ] && break; sleep 0.5; done
[ "$(show NRestarts)" = 1 ] && [ "$(show MainPID)" != "$pid" ]; check $? "a stopped event loop: killed by the watchdog, restarted"
sleep 1
state && tail -1 "$work/sims.log" | grep -q 'sleeping true,true'; check $? "after the watchdog restart the rack is still curtailed"

# ---- upgrades
mk_variant() { # version, broken?
  local d="$work/v-$1"
  tar -xzf "$bundle" -C "$work" && mv "$work"/rackpilot-*/ "$d"
  sed -i "s/\"version\": \"[^\"]*\"/\"version\": \"$1\"/" "$d/package.json" "$d/BUNDLE.json"
  sed -i "s/\"buildId\": \"[^\"]*\"/\"buildId\": \"bench-$1\"/" "$d/BUNDLE.json"
  # broken: the agent's start fails after it is up (in the bundled agent's chunk, wherever esbuild put it)
  if [ "${2:-}" = broken ]; then
    sed -i 's/await this\.agentNow\.start()/await this.agentNow.start().then(()=>{throw new Error("bench: never ready")})/g' "$d"/dist/agent/*.js
    grep -q 'bench: never ready' "$d"/dist/agent/*.js || { echo "mk_variant: the agent's start was not found to break" >&2; return 1; }
  fi
  echo "$d"
}
before="$("${N[@]}" readlink /opt/rackpilot/current)"
"${N[@]}" bash "$(mk_variant 9.0.0 broken)/install.sh" > "$work/install-bad.log" 2>&1 && r=1 || r=0
[ "$r" = 0 ] && [ "$("${N[@]}" readlink /opt/rackpilot/current)" = "$before" ] && [ "$(show SubState)" = running ]; check $? "an upgrade that never becomes ready is rolled back to $before, which runs again"
"${N[@]}" bash "$(mk_variant 9.0.1)/install.sh" > "$work/install-good.log" 2>&1; check $? "a good upgrade"
curl -sf 127.0.0.1:9108/healthz | grep -q '"version":"9.0.1"'; check $? "the upgraded version answers /healthz"
"${N[@]}" bash "$work/v-9.0.1/install.sh" | grep -q 'nothing to change'; check $? "a second run changes nothing"
echo "      $("${N[@]}" systemd-analyze security rackpilot --no-pager 2>/dev/null | tail -1)"

# ---- stop, uninstall
"${N[@]}" systemctl stop rackpilot; [ "$(show Result)" = success ]; check $? "systemctl stop: clean exit"
"${N[@]}" "$here/install.sh" --uninstall --purge > "$work/uninstall.log" 2>&1 && ! "${N[@]}" id rackpilot >/dev/null 2>&1; check $? "uninstall --purge"

echo "$fails failure(s); logs in $work"
[ "$fails" = 0 ]
