#!/bin/sh
# apt-install.sh PACKAGE... - installs Debian packages with apt-get, as root or through
# sudo, without questions, waiting for another apt run; refreshes the package lists once
# if the first try fails. Starts no service: the tests and benchmarks run their own daemons
# (FRR, OVS), with their own configs, sockets and namespaces. Used by setup-peers.sh and
# setup-bench.sh.
set -eu
[ $# -gt 0 ] || exit 0
SUDO=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo > /dev/null || { echo "apt-install: need root or sudo to install: $*" >&2; exit 1; }
  SUDO=sudo
fi
echo "apt-install: installing $*" >&2
# invoke-rc.d and deb-systemd-invoke ask /usr/sbin/policy-rc.d before a maintainer script
# starts a service; 101: "action forbidden by policy" (Debian's README.policy-rc.d). One
# already there (a container image's) is left as it is.
POLICY=/usr/sbin/policy-rc.d
if [ ! -e $POLICY ]; then
  $SUDO sh -c "printf '#!/bin/sh\nexit 101\n' > $POLICY && chmod 755 $POLICY"
  trap '$SUDO rm -f $POLICY' EXIT
  # dash runs no EXIT trap on a signal: a signal exits, and the EXIT trap runs.
  trap 'exit 130' INT TERM HUP
fi
# env: sudo drops the caller's environment. Lock::Timeout: wait for another apt run.
install="env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=300"
# shellcheck disable=SC2086
$SUDO $install "$@" >&2 || { $SUDO apt-get update -q >&2 && $SUDO $install "$@" >&2; }
