#!/usr/bin/env bash
# Installs everything this project needs on a fresh Debian machine, idempotently:
# the Debian packages for the emulation VM and the live radio tests, then a venv
# with the project and its test tools, then Mininet-WiFi (the `mininet` backend) from
# ../shared/third_party. Run as root (CI does); re-running is cheap.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBS=(
  qemu-system-x86    # boots the Debian kernel (which has mac80211_hwsim) under TCG
  linux-image-amd64  # the full flavour: WLAN drivers, hwsim, 9p (the cloud one has none)
  wpasupplicant      # the real P2P stack every station runs
  iw                 # moves radios into station namespaces
  dbus               # one dbus-daemon per station (wpa_supplicant's bus name is once per bus)
  kmod               # modprobe mac80211_hwsim inside the guest
  busybox-static     # virtme-ng's guest init helpers
  udev               # virtme-ng needs it on the host to return output and exit codes
  file               # virtme-ng probes the kernel image with it
  iproute2           # ip netns / ip link for stations
  iputils-ping       # the CLI's pingall and `<station> ping <station>`
  systemd            # systemd-analyze verify/security for the unit tests
  libxml2-utils      # xmllint, to validate the D-Bus policy
  logrotate          # the shipped logrotate rule is exercised by a test
  # Mininet-WiFi backend: build wmediumd, hwsim_mgmt and mnexec (below), run them in the VM
  gcc make pkg-config patch
  libnl-3-dev libnl-genl-3-dev libnl-route-3-dev libconfig-dev libevent-dev
  libnl-3-200 libnl-genl-3-200 libconfig9 libevent-2.1-7
  rfkill             # mn_wifi unblocks every radio it creates with it
  psmisc procps      # fuser, pgrep/pkill: mn_wifi's teardown inside the VM
)

missing=()
for p in "${DEBS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing Debian packages: ${missing[*]}" >&2
    echo "setup: run as root, or: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  echo "setup: installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
echo "setup: installing the project and its test tools into .venv"
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'
bash scripts/setup-mininet.sh
echo "setup: done. Tests: .venv/bin/python -m pytest"
