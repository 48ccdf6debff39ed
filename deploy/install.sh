#!/usr/bin/env bash
# Installs dozor as a systemd service.
#
#   deploy/install.sh [--dry-run] [--root DIR] [BINARY]
#
# BINARY     a built dozor binary to install; without it, run from a source checkout and the
#            binary is built with `cargo build --release`
# --dry-run  print what would be done, change nothing
# --root DIR install under DIR instead of / (for packaging or trying it out); no systemctl
# --help     show this text
#
# Installs /usr/local/bin/dozor, creates /etc/dozor (0750) with dozor.toml (0640) and dozor.env
# (0600) from the examples when they do not exist yet (existing files are never overwritten),
# installs /etc/systemd/system/dozor.service and reloads systemd.
set -euo pipefail

src=$(cd "$(dirname "$0")/.." && pwd)
dry_run=0
root=""
binary=""

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; }
die() { printf 'install.sh: error: %s\n' "$*" >&2; exit 1; }
say() { printf '==> %s\n' "$*"; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        -n|--dry-run) dry_run=1 ;;
        --root) [[ $# -ge 2 ]] || die "--root needs a directory"; root=${2%/}; shift ;;
        --root=*) root=${1#--root=}; root=${root%/} ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) [[ -z $binary ]] || die "only one binary path may be given"; binary=$1 ;;
    esac
    shift
done

# Runs a command, or only prints it with --dry-run.
run() {
    if [[ $dry_run == 1 ]]; then
        local line
        line=$(printf '%q ' "$@")
        printf '+ %s\n' "${line% }"
    else
        "$@"
    fi
}

if [[ $dry_run == 0 && -z $root && $(id -u) != 0 ]]; then
    die "run as root (sudo $0), or try --dry-run first"
fi

bin_dir="$root/usr/local/bin"
etc_dir="$root/etc/dozor"
unit_dir="$root/etc/systemd/system"

for f in config/dozor.example.toml deploy/dozor.env.example systemd/dozor.service; do
    [[ -f $src/$f ]] || die "$src/$f is missing: run this script from a dozor source tree or release archive"
done

# 1. The binary.
if [[ -z $binary ]]; then
    [[ -f $src/Cargo.toml ]] || die "no binary given and $src is not a source checkout; pass the path of a built dozor binary"
    say "building dozor (cargo build --release)"
    if [[ -n ${SUDO_USER:-} && $SUDO_USER != root ]]; then
        # Build as the user who called sudo, so target/ does not end up owned by root.
        # shellcheck disable=SC2016  # $1 is expanded by the inner shell
        run runuser -u "$SUDO_USER" -- bash -lc 'cd "$1" && cargo build --release --locked' _ "$src"
    else
        command -v cargo >/dev/null 2>&1 || die "cargo not found; install Rust (rustup) or pass a built binary"
        # shellcheck disable=SC2016
        run bash -c 'cd "$1" && cargo build --release --locked' _ "$src"
    fi
    binary="$src/target/release/dozor"
fi
if [[ $dry_run == 0 ]]; then
    [[ -x $binary ]] || die "$binary is not an executable file"
fi
say "installing $binary as $bin_dir/dozor"
run install -d -m 0755 "$bin_dir"
run install -m 0755 "$binary" "$bin_dir/dozor"

# 2. Configuration: root-only; the service receives dozor.toml as a systemd credential.
say "configuration in $etc_dir"
run install -d -m 0750 "$etc_dir"
if [[ -e $etc_dir/dozor.toml ]]; then
    say "keeping existing $etc_dir/dozor.toml"
else
    say "creating $etc_dir/dozor.toml from config/dozor.example.toml (edit it)"
    if [[ $dry_run == 1 ]]; then
        printf '+ sed s#data_dir = "./data"#data_dir = "/var/lib/dozor"# %q > %q\n' \
            "$src/config/dozor.example.toml" "$etc_dir/dozor.toml"
    else
        (umask 077 && sed 's#^data_dir = "./data"#data_dir = "/var/lib/dozor"#' \
            "$src/config/dozor.example.toml" >"$etc_dir/dozor.toml")
    fi
    run chmod 0640 "$etc_dir/dozor.toml"
fi
if [[ -e $etc_dir/dozor.env ]]; then
    say "keeping existing $etc_dir/dozor.env"
else
    say "creating $etc_dir/dozor.env from deploy/dozor.env.example"
    run install -m 0600 "$src/deploy/dozor.env.example" "$etc_dir/dozor.env"
fi

# 3. The service.
say "installing $unit_dir/dozor.service"
run install -d -m 0755 "$unit_dir"
run install -m 0644 "$src/systemd/dozor.service" "$unit_dir/dozor.service"
if [[ -n $root ]]; then
    say "--root given: not touching systemd"
elif command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
    run systemctl daemon-reload
else
    say "systemd is not running here: skipped systemctl daemon-reload"
fi

cat <<NEXT

dozor is installed$([[ $dry_run == 1 ]] && echo ' (dry run: nothing was changed)'). Next steps:
  1. Edit $etc_dir/dozor.toml (CRM, telephony, Telegram) and, for secrets kept outside it,
     $etc_dir/dozor.env. Every rule ships in mode = "shadow": dozor reads the CRM and reports
     what it would do, and writes nothing until you switch a rule on.
  2. Check it:        dozor check --config /etc/dozor/dozor.toml
  3. Start it:        systemctl enable --now dozor
  4. Watch it:        journalctl -u dozor -f   and   curl -s http://127.0.0.1:9187/readyz
  5. Review shadow:   dozor audit --state shadow   and   dozor once --dry-run
     (and the daily report); then set mode = "on" for a rule in dozor.toml and
     systemctl restart dozor.
NEXT
