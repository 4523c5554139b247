#!/usr/bin/env bash
# rackpilot installer for rack controllers (Debian-family, systemd, x64 or arm64).
#
#   ./install.sh                        from an unpacked bundle (or a repository clone: it bundles first)
#   ./install.sh --bundle FILE.tar.gz   from a release bundle made by `npm run bundle` (works offline)
#   ./install.sh --uninstall [--purge]  remove it (config and state are kept unless --purge)
#
# options:
#   --prefix DIR       installation prefix (default /opt/rackpilot): versions in DIR/<version>, DIR/current links one
#   --root DIR         install into a directory tree instead of this system (an image, a test): users, ownership
#                      and systemctl are printed as "skipped (--root): ..." instead of run
#   --node PATH        the node binary the service runs (default: node on PATH; must be >= 20)
#   --systemctl PATH   the systemctl to call (default: systemctl; with --root, none unless given)
#   --no-start         install and enable, but do not start or restart the service
#   --purge            with --uninstall: also remove /etc/rackpilot, /var/lib/rackpilot and the rackpilot user
#   -h, --help
#
# What it does (every step is idempotent: a second run changes nothing):
#   checks Node >= 20, the bundle's architecture and Node ABI, systemd, root privileges;
#   creates the `rackpilot` system user (groups dialout, gpio where present);
#   installs the bundle to PREFIX/<version> and points PREFIX/current at it;
#   /usr/local/bin/rackpilot runs the current version;
#   /etc/rackpilot/config.yaml from the example (mode 0640, never overwritten), config.example.yaml refreshed;
#   /etc/default/rackpilot (node flags: the low-memory profile; never overwritten); /var/lib/rackpilot (state, 0750);
#   a hardened systemd unit (Type=notify, WatchdogSec, Restart=always, ProtectSystem=strict, no capabilities).
# Upgrade: the new version must pass a pre-flight check (it loads, its native bindings load, it accepts the
# current config) before `current` moves; when the restarted service then fails to become ready, `current`
# goes back to the previous version, which is restarted. The previous version is kept; older ones are removed.
set -euo pipefail
umask 022

PROG=install
say() { printf '%s: %s\n' "$PROG" "$*"; }
die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }
usage() { sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; }

ROOT=""
PREFIX=/opt/rackpilot
PREFIX_GIVEN=0
BUNDLE=""
NODE=""
SYSTEMCTL=""
NO_START=0
UNINSTALL=0
PURGE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --bundle) BUNDLE="${2:?--bundle needs a file}"; shift 2 ;;
    --prefix) PREFIX="${2:?--prefix needs a directory}"; PREFIX_GIVEN=1; shift 2 ;;
    --root) ROOT="${2:?--root needs a directory}"; shift 2 ;;
    --node) NODE="${2:?--node needs a path}"; shift 2 ;;
    --systemctl) SYSTEMCTL="${2:?--systemctl needs a path}"; shift 2 ;;
    --no-start) NO_START=1; shift ;;
    --uninstall) UNINSTALL=1; shift ;;
    --purge) PURGE=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option \"$1\" (see --help)" ;;
  esac
done
case "$PREFIX" in /*) ;; *) die "--prefix must be an absolute path (it is written into the unit file), got \"$PREFIX\"" ;; esac
case "$PREFIX" in *[[:space:]]*) die "--prefix must not contain white space (it is written into the unit file), got \"$PREFIX\"" ;; esac
[ "$PURGE" = 0 ] || [ "$UNINSTALL" = 1 ] || die "--purge goes with --uninstall"

# ---------------------------------------------------------------- where things go
if [ -n "$ROOT" ]; then
  mkdir -p "$ROOT"
  ROOT="$(cd "$ROOT" && pwd)"
  [ "$ROOT" != / ] || ROOT=""
fi
LIVE=1
[ -z "$ROOT" ] || LIVE=0
R="$ROOT"
CONF_DIR=/etc/rackpilot
STATE_DIR=/var/lib/rackpilot
BIN_DIR=/usr/local/bin
UNIT_DIR=/etc/systemd/system
DEFAULTS=/etc/default/rackpilot
UNIT=rackpilot.service
USER_NAME=rackpilot
CHANGES=0

changed() { CHANGES=$((CHANGES + 1)); say "$*"; }

# a command that changes the system (users, ownership): run it live, print it under --root
sys() {
  if [ "$LIVE" = 1 ]; then "$@"; else say "skipped (--root): $*"; fi
}

have_systemctl() { [ -n "$SYSTEMCTL" ]; }
sc() { "$SYSTEMCTL" "$@"; }

if [ -z "$SYSTEMCTL" ] && [ "$LIVE" = 1 ]; then SYSTEMCTL=systemctl; fi

# writes stdin to FILE with MODE when the content or mode differs; returns 0 when it changed something.
# The comparison copy lives outside the target directory, so an unchanged file leaves even the directory's mtime alone.
# It runs in this shell (callers feed it with `< file` or `< <(...)`, never a pipe), so a failure ends the install.
write_if_changed() {
  local file="$1" mode="$2" tmp
  tmp="$(mktemp "${TMPDIR:-/tmp}/rackpilot-file.XXXXXX")" || die "cannot create a temporary file (TMPDIR=${TMPDIR:-/tmp})"
  cat > "$tmp" || { rm -f "$tmp"; die "cannot write a temporary copy of ${file#"$R"}"; }
  chmod "$mode" "$tmp" || die "chmod $mode $tmp failed"
  if [ -f "$file" ] && cmp -s "$tmp" "$file" && [ "$(stat -c %a "$file")" = "$(stat -c %a "$tmp")" ]; then
    rm -f "$tmp"
    return 1
  fi
  install -m "$mode" "$tmp" "$file.rackpilot-new" || { rm -f "$tmp"; die "cannot write ${file#"$R"}"; }
  rm -f "$tmp"
  mv -f "$file.rackpilot-new" "$file" || die "cannot replace ${file#"$R"}"
  return 0
}

ensure_dir() {
  local dir="$1" mode="$2"
  if [ ! -d "$dir" ]; then
    mkdir -p "$dir"
    chmod "$mode" "$dir"
    changed "created ${dir#"$R"} (mode $mode)"
  elif [ "$(stat -c %a "$dir")" != "${mode#0}" ]; then
    chmod "$mode" "$dir"
    changed "mode of ${dir#"$R"} set to $mode"
  fi
}

# ---------------------------------------------------------------- prerequisites
check_root_user() {
  [ "$LIVE" = 0 ] || [ "$(id -u)" = 0 ] || die "run as root (sudo $0 ...), or use --root DIR to install into a directory tree"
}

check_systemd() {
  [ "$LIVE" = 0 ] && return 0
  [ -d /run/systemd/system ] || die "systemd is not running on this machine (no /run/systemd/system): rackpilot runs as a systemd service; use --root DIR to prepare an image instead"
  command -v "$SYSTEMCTL" >/dev/null || die "systemctl not found"
}

check_node() {
  [ -n "$NODE" ] || NODE="$(command -v node || true)"
  [ -n "$NODE" ] || die "Node.js >= 20 is required and none is on PATH: install it (e.g. apt-get install nodejs from NodeSource, or pass --node /path/to/node)"
  [ -x "$NODE" ] || die "--node $NODE is not executable"
  case "$NODE" in /*) ;; *) NODE="$(cd "$(dirname "$NODE")" && pwd)/$(basename "$NODE")" ;; esac
  local v
  v="$("$NODE" -p 'process.versions.node' 2>/dev/null)" || die "$NODE does not run"
  [ "${v%%.*}" -ge 20 ] 2>/dev/null || die "Node.js >= 20 is required, $NODE is $v"
  NODE_VERSION="$v"
  case "$NODE" in
    *[[:space:]]*) die "the node path \"$NODE\" contains white space: it cannot go into the unit's ExecStart" ;;
    /home/*|/root/*|/run/user/*) die "$NODE is under /home, /root or /run/user (nvm?): the service cannot see it (ProtectHome=yes) nor, as user rackpilot, enter it; install Node system-wide (e.g. /usr/bin/node from NodeSource) or pass --node" ;;
  esac
  NODE_ARCH="$("$NODE" -p process.arch)"
  NODE_ABI="$("$NODE" -p process.versions.modules)"
}

bundle_field() { "$NODE" -p "require(process.argv[1])[process.argv[2]] ?? ''" "$SRC/BUNDLE.json" "$1"; }

check_bundle() {
  [ -f "$SRC/BUNDLE.json" ] || die "$SRC is not a rackpilot bundle (no BUNDLE.json)"
  VERSION="$(bundle_field version)"
  BUILD_ID="$(bundle_field buildId)"
  local arch abi built
  arch="$(bundle_field arch)"
  abi="$(bundle_field nodeAbi)"
  built="$(bundle_field builtWithNode)"
  case "$VERSION" in *[!A-Za-z0-9._+-]*|""|[!A-Za-z0-9]*|current|previous) die "bundle has a bad version \"$VERSION\"" ;; esac
  [ "$arch" = "$NODE_ARCH" ] || die "the bundle is for $arch but this machine runs $NODE_ARCH ($(uname -m)): build the bundle on a $NODE_ARCH machine (npm run bundle)"
  [ "$abi" = "$NODE_ABI" ] || die "the bundle's native bindings were built for Node ABI $abi ($built) but $NODE is $NODE_VERSION (ABI $NODE_ABI): build the bundle with Node $(echo "$built" | cut -d. -f1 | tr -d v) or install that Node version"
}

# the service's user must be able to run that node (a directory it cannot enter, a mode 0700 binary)
check_node_for_service() {
  [ "$LIVE" = 1 ] || return 0
  runuser -u "$USER_NAME" -- "$NODE" --version >/dev/null 2>&1 || die "user $USER_NAME cannot run $NODE: install Node where every user can run it, or pass --node"
}

# ---------------------------------------------------------------- the bundle
SELF_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WORK=""
STAGED=""
cleanup() {
  [ -z "$WORK" ] || rm -rf "$WORK"
  [ -z "$STAGED" ] || rm -rf "$STAGED" # an interrupted copy never stays behind
}
trap cleanup EXIT

find_source() {
  if [ -n "$BUNDLE" ]; then
    [ -f "$BUNDLE" ] || die "bundle $BUNDLE not found"
    WORK="$(mktemp -d "${TMPDIR:-/tmp}/rackpilot-install.XXXXXX")"
    tar -xzf "$BUNDLE" -C "$WORK" || die "cannot unpack $BUNDLE (not a .tar.gz made by npm run bundle?)"
    SRC="$(find "$WORK" -mindepth 2 -maxdepth 2 -name BUNDLE.json -printf '%h\n' | head -n1)"
    [ -n "$SRC" ] || die "$BUNDLE holds no rackpilot bundle (no */BUNDLE.json)"
  elif [ -f "$SELF_DIR/BUNDLE.json" ]; then
    SRC="$SELF_DIR"
  elif [ -f "$SELF_DIR/package.json" ] && [ -f "$SELF_DIR/scripts/bundle.sh" ]; then
    say "installing from the repository: making a bundle first (scripts/bundle.sh)"
    WORK="$(mktemp -d "${TMPDIR:-/tmp}/rackpilot-install.XXXXXX")"
    PATH="$(dirname "$NODE"):$PATH" bash "$SELF_DIR/scripts/bundle.sh" --out "$WORK" >&2
    tar -xzf "$WORK"/rackpilot-*.tar.gz -C "$WORK"
    SRC="$(find "$WORK" -mindepth 2 -maxdepth 2 -name BUNDLE.json -printf '%h\n' | head -n1)"
  else
    die "no bundle: pass --bundle FILE.tar.gz, or run the install.sh inside an unpacked bundle"
  fi
}

# the new version loads, its native bindings load, it accepts the config in place
preflight() {
  local dir="$1" out
  out="$("$NODE" "$dir/dist/agent/cli.js" --version 2>&1)" || { echo "rackpilot --version failed: $out"; return 1; }
  [ "$out" = "$VERSION" ] || { echo "rackpilot --version printed \"$out\", expected $VERSION"; return 1; }
  out="$("$NODE" -e '
    const { createRequire } = require("node:module");
    const req = createRequire(process.argv[1] + "/package.json");
    req("koffi");
    req("@serialport/bindings-cpp");
    req("epoll");
  ' "$dir" 2>&1)" || { echo "native bindings do not load: $out"; return 1; }
  if [ -f "$R$CONF_DIR/config.yaml" ]; then
    out="$("$NODE" "$dir/dist/agent/cli.js" config check "$R$CONF_DIR/config.yaml" 2>&1)" || { echo "it rejects $CONF_DIR/config.yaml: $out"; return 1; }
  fi
}

# The version's directory: PREFIX/<version>, or PREFIX/<version>+<build> for a rebuilt bundle of a version
# already there: a running version is never replaced in place, so a rebuild can be rolled back like an upgrade.
install_version() {
  mkdir -p "$R$PREFIX"
  NEW_DIR=0
  DIR_NAME="$VERSION"
  local dest="$R$PREFIX/$DIR_NAME"
  if [ -e "$dest" ] && [ "$(build_of "$dest")" != "$BUILD_ID" ]; then
    DIR_NAME="$VERSION+${BUILD_ID:0:12}"
    dest="$R$PREFIX/$DIR_NAME"
  fi
  if [ -f "$dest/BUNDLE.json" ] && [ "$(build_of "$dest")" = "$BUILD_ID" ]; then
    return 0
  fi
  STAGED="$R$PREFIX/.$DIR_NAME.new.$$"
  rm -rf "$STAGED" "$dest"
  cp -a "$SRC/." "$STAGED/" || die "cannot copy the bundle to $PREFIX (disk full?)"
  chmod -R u+rwX,go+rX,go-w "$STAGED"
  [ "$LIVE" = 0 ] || chown -R root:root "$STAGED"
  if ! reason="$(preflight "$STAGED")"; then
    rm -rf "$STAGED"
    STAGED=""
    die "version $VERSION failed its pre-flight check: $reason. Nothing was changed$(current_note)."
  fi
  mv "$STAGED" "$dest"
  STAGED=""
  changed "installed $PREFIX/$DIR_NAME (build $BUILD_ID)"
  NEW_DIR=1
}

build_of() { [ -f "$1/BUNDLE.json" ] && "$NODE" -p "require(process.argv[1]).buildId" "$1/BUNDLE.json" 2>/dev/null || true; }

current_version() { readlink "$R$PREFIX/current" 2>/dev/null || true; }
current_note() { local c; c="$(current_version)"; [ -z "$c" ] || printf '; %s stays current' "$c"; }

# atomic: a new link renamed over the old one
set_link() {
  ln -sfn "$2" "$R$PREFIX/.$1.new"
  mv -T "$R$PREFIX/.$1.new" "$R$PREFIX/$1"
}
point_current_at() { set_link current "$1"; }

# ---------------------------------------------------------------- user, files
ensure_user() {
  if [ "$LIVE" = 0 ] || ! getent passwd "$USER_NAME" >/dev/null; then
    sys useradd --system --user-group --home-dir "$STATE_DIR" --no-create-home --shell /usr/sbin/nologin --comment "rackpilot agent" "$USER_NAME"
    [ "$LIVE" = 0 ] || changed "created the system user $USER_NAME"
  fi
  local g
  for g in dialout gpio; do
    if [ "$LIVE" = 1 ]; then
      getent group "$g" >/dev/null || continue
      id -nG "$USER_NAME" | tr ' ' '\n' | grep -qx "$g" && continue
    fi
    sys usermod --append --groups "$g" "$USER_NAME"
    [ "$LIVE" = 0 ] || changed "added $USER_NAME to group $g"
  done
}

install_files() {
  ensure_dir "$R$BIN_DIR" 0755
  if write_if_changed "$R$BIN_DIR/rackpilot" 0755 < <(printf '#!/bin/sh\n# rackpilot: runs the version %s/current links to (install.sh)\nexec %s "%s/current/dist/agent/cli.js" "$@"\n' "$PREFIX" "$NODE" "$PREFIX"); then
    changed "wrote $BIN_DIR/rackpilot"
  fi

  ensure_dir "$R$CONF_DIR" 0750
  sys chown root:"$USER_NAME" "$R$CONF_DIR"
  NEW_CONFIG=0
  if [ ! -e "$R$CONF_DIR/config.yaml" ]; then
    install -m 0640 "$SRC/examples/rack.yaml" "$R$CONF_DIR/config.yaml"
    sys chown root:"$USER_NAME" "$R$CONF_DIR/config.yaml"
    NEW_CONFIG=1
    changed "created $CONF_DIR/config.yaml from the example (mode 0640): edit it"
  fi
  if write_if_changed "$R$CONF_DIR/config.example.yaml" 0640 < "$SRC/examples/rack.yaml"; then
    sys chown root:"$USER_NAME" "$R$CONF_DIR/config.example.yaml"
    changed "wrote $CONF_DIR/config.example.yaml (every key with its default, for this version)"
  fi

  ensure_dir "$(dirname "$R$DEFAULTS")" 0755
  if [ ! -e "$R$DEFAULTS" ]; then
    cat > "$R$DEFAULTS" <<'EOF'
# rackpilot service environment (read by rackpilot.service; never overwritten by install.sh)
#
# Node flags put before the agent on the node command line. The default is the low-memory
# profile (agent/runtime.ts): about 75 MiB RSS with 256 devices instead of 125-155 MiB, and no
# main-thread stall of a few ms on the signal path. Its price: the last of 256 curtail
# commands leaves about 8 ms after the edge instead of 3 ms. Empty: node's JIT (the fast
# fan-out, for a controller with RAM to spare):
# RACKPILOT_NODE_FLAGS=
RACKPILOT_NODE_FLAGS=--jitless --no-expose-wasm --max-semi-space-size=1 --max-old-space-size=96 --optimize-for-size
EOF
    chmod 0644 "$R$DEFAULTS"
    changed "created $DEFAULTS"
  fi

  ensure_dir "$R$STATE_DIR" 0750
  # recursively: state files left by a run as root (e.g. "rackpilot run" by hand) would stop the service
  if [ "$LIVE" = 0 ] || [ -n "$(find "$STATE_DIR" \( ! -user "$USER_NAME" -o ! -group "$USER_NAME" \) -print -quit)" ]; then
    sys chown -R "$USER_NAME:$USER_NAME" "$R$STATE_DIR"
    [ "$LIVE" = 0 ] || changed "$STATE_DIR (and everything in it) now owned by $USER_NAME"
  fi
}

unit_text() {
  cat <<EOF
# rackpilot rack agent: written by install.sh (rerun it rather than editing; use
# "systemctl edit rackpilot" for local overrides).
[Unit]
Description=rackpilot rack curtailment agent
Documentation=file://$PREFIX/current/README.md
Wants=network-online.target
After=network-online.target time-sync.target
# never give up restarting: a rack agent that stays down cannot curtail
StartLimitIntervalSec=0

[Service]
Type=notify
NotifyAccess=main
User=$USER_NAME
Group=$USER_NAME
EnvironmentFile=-$DEFAULTS
ExecStart=$NODE \$RACKPILOT_NODE_FLAGS $PREFIX/current/dist/agent/cli.js run --config $CONF_DIR/config.yaml
ExecReload=/bin/kill -HUP \$MAINPID
# WATCHDOG=1 comes from the event loop every WatchdogSec/2: a loop stuck this long is restarted
WatchdogSec=10s
TimeoutStartSec=90s
TimeoutStopSec=20s
Restart=always
RestartSec=2s
LimitNOFILE=65536
UMask=0027
# the curtailment path comes first on a busy controller (log shippers, package updates): a
# higher CPU priority, and among the last processes the kernel kills when memory runs out
Nice=-10
OOMScoreAdjust=-500

# hardening: the file system is read-only but for the state directory
ProtectSystem=strict
StateDirectory=rackpilot
StateDirectoryMode=0750
ReadWritePaths=$STATE_DIR
ProtectHome=yes
PrivateTmp=yes
NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
RestrictSUIDSGID=yes
RestrictRealtime=yes
RestrictNamespaces=yes
LockPersonality=yes
ProtectHostname=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallErrorNumber=EPERM
# Left out on purpose: PrivateDevices= and ProtectClock= (they hide /dev/ttyUSB* and
# /dev/gpiochip*: serial meters and GPIO), ProtectKernelTunables= (makes /sys read-only:
# the sysfs GPIO backend writes /sys/class/gpio), MemoryDenyWriteExecute= (V8's JIT).

[Install]
WantedBy=multi-user.target
EOF
}

install_unit() {
  ensure_dir "$R$UNIT_DIR" 0755
  UNIT_CHANGED=0
  if write_if_changed "$R$UNIT_DIR/$UNIT" 0644 < <(unit_text); then
    UNIT_CHANGED=1
    changed "wrote $UNIT_DIR/$UNIT"
  fi
}

# keeps the versions `current` and `previous` link to
prune_versions() {
  local keep_a keep_b d v
  keep_a="$(readlink "$R$PREFIX/current" 2>/dev/null || true)"
  keep_b="$(readlink "$R$PREFIX/previous" 2>/dev/null || true)"
  local keep_c
  keep_c="$(started_dir)"
  for d in "$R$PREFIX"/*/; do
    d="${d%/}"
    v="$(basename "$d")"
    [ ! -L "$d" ] && [ "$v" != "$keep_a" ] && [ "$v" != "$keep_b" ] && [ "$v" != "$keep_c" ] && [ -f "$d/BUNDLE.json" ] || continue
    rm -rf "$d"
    changed "removed old version $PREFIX/$v (keeping $keep_a${keep_b:+ and $keep_b})"
  done
  for d in "$R$PREFIX"/.*.new.*; do
    [ -d "$d" ] || continue
    rm -rf "$d"
    changed "removed $PREFIX/$(basename "$d") (left by an interrupted install)"
  done
}

# ---------------------------------------------------------------- the service
start_service() {
  local prev="$1"
  if ! have_systemctl; then
    say "skipped (--root): systemctl daemon-reload; systemctl enable $UNIT; systemctl restart $UNIT"
    return 0
  fi
  if [ "$UNIT_CHANGED" = 1 ] || [ "$(sc show -p NeedDaemonReload --value "$UNIT" 2>/dev/null || true)" = yes ]; then sc daemon-reload; fi
  if ! sc is-enabled --quiet "$UNIT" 2>/dev/null; then
    sc enable "$UNIT" >/dev/null 2>&1 || sc enable "$UNIT"
    changed "enabled $UNIT (starts at boot)"
  fi
  if [ "$NO_START" = 1 ]; then
    say "not started (--no-start): systemctl restart $UNIT"
    return 0
  fi
  if [ "$NEW_CONFIG" = 1 ] || cmp -s "$R$CONF_DIR/config.yaml" "$SRC/examples/rack.yaml"; then
    say "not started: edit $CONF_DIR/config.yaml (site, rack, broker, devices), check it with \"rackpilot doctor\", then: systemctl start $UNIT"
    return 0
  fi
  # restarted when the version it last started (a --no-start install, an interrupted run) is not `current`
  if [ "$SWITCHED" = 0 ] && [ "$UNIT_CHANGED" = 0 ] && [ "$(started_dir)" = "$DIR_NAME" ] && sc is-active --quiet "$UNIT"; then
    return 0
  fi
  say "restarting $UNIT (waits for the agent to report ready)"
  if sc restart "$UNIT" && sc is-active --quiet "$UNIT"; then
    mark_started "$DIR_NAME"
    changed "$UNIT is running $DIR_NAME"
    return 0
  fi
  if [ -n "$prev" ] && [ "$prev" != "$DIR_NAME" ] && [ -d "$R$PREFIX/$prev" ]; then
    point_current_at "$prev"
    show_journal
    say "version $DIR_NAME failed to become ready: rolled back to $prev (see journalctl -u $UNIT)"
    if sc restart "$UNIT" && sc is-active --quiet "$UNIT"; then
      mark_started "$prev"
      die "upgrade to $DIR_NAME failed; $prev is running again. $DIR_NAME stays in $PREFIX/$DIR_NAME for inspection"
    fi
    die "upgrade to $DIR_NAME failed and $prev did not come back either: journalctl -u $UNIT -n 100"
  fi
  show_journal
  die "$UNIT failed to start: journalctl -u $UNIT -n 100; then rackpilot doctor"
}

# PREFIX/.started names the version directory the service was last (re)started with by this script
started_dir() { cat "$R$PREFIX/.started" 2>/dev/null || true; }
mark_started() { printf '%s\n' "$1" > "$R$PREFIX/.started"; }

# the service's last words, where journald has them
show_journal() {
  [ "$LIVE" = 1 ] && command -v journalctl >/dev/null || return 0
  say "last log lines of $UNIT:"
  journalctl -u "$UNIT" -n 15 --no-pager -o cat 2>/dev/null | sed 's/^/  /' | cut -c1-300 >&2 || true
}

# ---------------------------------------------------------------- uninstall
# removes what install.sh put under PREFIX (versions, links, its marks), then PREFIX if that left it empty
remove_versions() {
  [ -d "$R$PREFIX" ] || return 0
  local d
  for d in "$R$PREFIX"/current "$R$PREFIX"/previous "$R$PREFIX"/.current.new "$R$PREFIX"/.previous.new; do
    if [ -L "$d" ]; then rm -f "$d"; fi
  done
  rm -f "$R$PREFIX/.started"
  for d in "$R$PREFIX"/*/ "$R$PREFIX"/.*.new.*/; do
    d="${d%/}"
    [ -d "$d" ] && [ ! -L "$d" ] && [ -f "$d/BUNDLE.json" ] || continue
    rm -rf "$d"
    changed "removed $PREFIX/$(basename "$d")"
  done
  if rmdir "$R$PREFIX" 2>/dev/null; then changed "removed $PREFIX"; else say "kept $PREFIX: it holds files install.sh did not put there"; fi
}

uninstall() {
  check_root_user
  # the prefix it was installed with, unless --prefix says otherwise
  if [ "$PREFIX_GIVEN" = 0 ] && [ -f "$R$UNIT_DIR/$UNIT" ]; then
    local p
    p="$(sed -n 's|^ExecStart=.* \(/[^ ]*\)/current/dist/agent/cli\.js run .*|\1|p' "$R$UNIT_DIR/$UNIT" | head -n1)"
    [ -z "$p" ] || PREFIX="$p"
  fi
  if [ -f "$R$UNIT_DIR/$UNIT" ]; then
    if have_systemctl; then
      sc disable --now "$UNIT" >/dev/null 2>&1 || true
      say "stopped and disabled $UNIT"
    else
      say "skipped (--root): systemctl disable --now $UNIT"
    fi
    rm -f "$R$UNIT_DIR/$UNIT"
    changed "removed $UNIT_DIR/$UNIT"
    if have_systemctl; then sc daemon-reload; fi
  fi
  remove_versions
  if [ -e "$R$BIN_DIR/rackpilot" ]; then rm -f "$R$BIN_DIR/rackpilot"; changed "removed $BIN_DIR/rackpilot"; fi
  if [ "$PURGE" = 1 ]; then
    local p
    for p in "$CONF_DIR" "$STATE_DIR" "$DEFAULTS"; do
      case "$p" in /?*) ;; *) die "refusing to remove \"$p\"" ;; esac
      if [ -e "$R$p" ]; then rm -rf -- "$R$p"; changed "removed $p"; fi
    done
    if [ "$LIVE" = 0 ] || getent passwd "$USER_NAME" >/dev/null; then
      sys userdel "$USER_NAME"
      [ "$LIVE" = 0 ] || changed "removed the user $USER_NAME"
    fi
  else
    local kept=""
    for p in "$CONF_DIR" "$STATE_DIR" "$DEFAULTS"; do [ ! -e "$R$p" ] || kept="$kept $p"; done
    [ -z "$kept" ] || say "kept$kept and the $USER_NAME user (--uninstall --purge removes them)"
  fi
  if [ "$CHANGES" = 0 ]; then say "rackpilot is not installed: nothing to remove"; else say "uninstalled"; fi
}

# ---------------------------------------------------------------- main
if [ "$UNINSTALL" = 1 ]; then
  uninstall
  exit 0
fi

check_root_user
check_node
check_systemd
find_source
check_bundle
say "rackpilot $VERSION (build $BUILD_ID) for $NODE_ARCH, node $NODE_VERSION at $NODE, into ${ROOT:+$ROOT (--root) }$PREFIX"

ensure_user
check_node_for_service
install_version
PREV="$(current_version)"
# a service running before this script ever started it runs what `current` links to now
if [ -n "$PREV" ] && [ -z "$(started_dir)" ] && have_systemctl && sc is-active --quiet "$UNIT" 2>/dev/null; then mark_started "$PREV"; fi
SWITCHED=0
if [ "$PREV" != "$DIR_NAME" ]; then
  if [ "$NEW_DIR" = 0 ] && ! reason="$(preflight "$R$PREFIX/$DIR_NAME")"; then
    die "version $DIR_NAME failed its pre-flight check: $reason. Nothing was switched$(current_note)."
  fi
  point_current_at "$DIR_NAME"
  SWITCHED=1
  if [ -n "$PREV" ]; then set_link previous "$PREV"; fi
  changed "current -> $DIR_NAME${PREV:+ (previous: $PREV, kept)}"
fi
# what to go back to if the service does not come up: the previous `current`, else what it ran before
ROLLBACK="$PREV"
[ "$ROLLBACK" != "$DIR_NAME" ] || ROLLBACK="$(started_dir)"
[ "$ROLLBACK" != "$DIR_NAME" ] || ROLLBACK=""
install_files
install_unit
start_service "$ROLLBACK"
prune_versions

if [ "$CHANGES" = 0 ]; then
  say "nothing to change: rackpilot $VERSION is installed as it should be"
else
  say "done: $CHANGES change(s)"
fi
