#!/usr/bin/env bash
# Builds the Debian package of huione with dpkg-deb:
#   scripts/package.sh [--profile release|debug|NAME] [--out DIR] [--no-build]
#
# The package `huione` holds the operator's binaries in /usr/bin (huione-validator,
# huione-watchtower, huione-tower, huione-certs, huione-keygen, huione-audit,
# huione-genesis), the systemd units of deploy/systemd in /lib/systemd/system, their flag
# files /etc/default/huione-validator and /etc/default/huione-watchtower (conffiles), the
# alert rules and the Grafana dashboard in /usr/share/huione, the README, copyright and
# changelog in /usr/share/doc/huione, and a postinst that creates the system user huione.
#
# --profile (default release): the cargo profile whose binaries are packaged; `debug` is
# cargo's `dev` profile (target/debug). The binaries are built first with
# `cargo build --locked` (a no-op when up to date) unless --no-build, which packages what
# target/<profile> already holds. Debug symbols are stripped (symbol names kept for
# backtraces). Release packages are xz-compressed; other profiles gzip -1 (quick, for tests).
# Prints the path of the .deb on stdout (everything else goes to stderr).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

profile=release
out=target/debian
build=1
usage="usage: scripts/package.sh [--profile release|debug|NAME] [--out DIR] [--no-build]"
while (($#)); do
    case $1 in
        --profile) profile=${2:?"--profile needs a value: $usage"}; shift 2 ;;
        --profile=*) profile=${1#*=}; shift ;;
        --out) out=${2:?"--out needs a directory: $usage"}; shift 2 ;;
        --out=*) out=${1#*=}; shift ;;
        --no-build) build=0; shift ;;
        -h|--help) echo "$usage"; exit 0 ;;
        *) echo "scripts/package.sh: unknown argument '$1'; $usage" >&2; exit 2 ;;
    esac
done

case $profile in
    debug|dev) cargo_profile=dev; dir=debug ;;
    *) cargo_profile=$profile; dir=$profile ;;
esac
target_dir=${CARGO_TARGET_DIR:-$root/target}
bin_dir=$target_dir/$dir

for tool in dpkg-deb dpkg strip objdump gzip; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "scripts/package.sh: '$tool' not found: install dpkg and binutils (apt-get install dpkg binutils)" >&2
        exit 1
    }
done

# package:binary, in the order they are listed in the README.
bins=(
    huione-validator:huione-validator
    huione-validator:huione-audit
    huione-watchtower:huione-watchtower
    huione-cli:huione-keygen
    huione-cli:huione-certs
    huione-cli:huione-tower
    huione-cluster:huione-genesis
)

if ((build)); then
    args=(build --locked --profile "$cargo_profile")
    declare -A seen=()
    for pb in "${bins[@]}"; do
        pkg=${pb%%:*}
        [[ -n ${seen[$pkg]:-} ]] || args+=(-p "$pkg")
        seen[$pkg]=1
    done
    for pb in "${bins[@]}"; do args+=(--bin "${pb#*:}"); done
    echo "== cargo ${args[*]}" >&2
    "${CARGO:-cargo}" "${args[@]}" >&2
fi

for pb in "${bins[@]}"; do
    b=$bin_dir/${pb#*:}
    [[ -x $b ]] || {
        echo "scripts/package.sh: $b is missing: build it (cargo build --profile $cargo_profile -p ${pb%%:*}) or drop --no-build" >&2
        exit 1
    }
done

version=$("$bin_dir/huione-validator" --version | awk '{print $2}')
[[ $version =~ ^[0-9]+\.[0-9]+\.[0-9]+ ]] || {
    echo "scripts/package.sh: cannot read the version from '$bin_dir/huione-validator --version' (got '$version')" >&2
    exit 1
}
deb_version=$version-1
arch=$(dpkg --print-architecture)

stage=$(mktemp -d "${TMPDIR:-/tmp}/huione-package.XXXXXX")
trap 'rm -rf "$stage"' EXIT
pkg=$stage/huione
install -d -m 0755 "$pkg/DEBIAN" "$pkg/usr/bin" "$pkg/lib/systemd/system" "$pkg/etc/default" \
    "$pkg/usr/share/doc/huione" "$pkg/usr/share/huione/prometheus" "$pkg/usr/share/huione/grafana"

for pb in "${bins[@]}"; do
    install -m 0755 "$bin_dir/${pb#*:}" "$pkg/usr/bin/"
    strip --strip-debug "$pkg/usr/bin/${pb#*:}"
done
install -m 0644 deploy/systemd/huione-validator.service deploy/systemd/huione-watchtower.service \
    "$pkg/lib/systemd/system/"
install -m 0644 deploy/debian/huione-validator.default "$pkg/etc/default/huione-validator"
install -m 0644 deploy/debian/huione-watchtower.default "$pkg/etc/default/huione-watchtower"
install -m 0644 deploy/prometheus/huione.rules.yml "$pkg/usr/share/huione/prometheus/"
install -m 0644 deploy/grafana/huione.json "$pkg/usr/share/huione/grafana/"
install -m 0644 README.md deploy/debian/copyright "$pkg/usr/share/doc/huione/"

# A minimal Debian changelog, dated by the last commit (reproducible), else now.
date_r=$(git log -1 --format=%cD 2>/dev/null || date -R)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
printf 'huione (%s) unstable; urgency=medium\n\n  * Built by scripts/package.sh from commit %s (profile %s).\n\n -- huione developers <huione@localhost>  %s\n' \
    "$deb_version" "$commit" "$profile" "$date_r" | gzip -9n >"$pkg/usr/share/doc/huione/changelog.Debian.gz"
chmod 0644 "$pkg/usr/share/doc/huione/changelog.Debian.gz"

# The newest glibc symbol version any binary needs.
glibc=$(for pb in "${bins[@]}"; do objdump -T "$pkg/usr/bin/${pb#*:}"; done |
    grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)
installed_kb=$(du -sk --exclude=DEBIAN "$pkg" | cut -f1)

cat >"$pkg/DEBIAN/control" <<EOF
Package: huione
Version: $deb_version
Architecture: $arch
Maintainer: huione developers <huione@localhost>
Installed-Size: $installed_kb
Depends: adduser, libc6 (>= $glibc), libgcc-s1
Recommends: etcd-client
Suggests: prometheus, etcd-server
Section: net
Priority: optional
Description: validator node with safe hot-standby failover
 huione is a Solana-style proof-of-stake validator whose vote record (the
 tower) is stored in etcd over mutual TLS under a fenced lock before every
 vote, so that a primary and a hot standby can share one identity and never
 vote twice. This package holds the validator, the failover monitor
 (watchtower), the tower, certificate, key, genesis and audit tools, systemd
 units, Prometheus alert rules and a Grafana dashboard.
EOF
printf '/etc/default/huione-validator\n/etc/default/huione-watchtower\n' >"$pkg/DEBIAN/conffiles"
install -m 0755 deploy/debian/postinst deploy/debian/postrm "$pkg/DEBIAN/"

if [[ $profile == release ]]; then compress=(-Zxz); else compress=(-Zgzip -z1); fi
mkdir -p "$out"
deb=$out/huione_${deb_version}_${arch}.deb
dpkg-deb --root-owner-group "${compress[@]}" --build "$pkg" "$deb" >&2
echo "$(cd "$(dirname "$deb")" && pwd)/$(basename "$deb")"
