#!/usr/bin/env bash
# Mininet-WiFi for the emulation's `mininet` backend, installed idempotently (called by
# scripts/setup.sh after .venv exists; the Debian build packages come from there):
#
# * Python, into .venv: mininet and mn_wifi (the wheels in ../shared/third_party) and
#   their PyPI dependencies, pinned (FlightRadarAPI 1.5+ renamed its module and
#   mn_wifi.net fails to import; setuptools 82 dropped pkg_resources, which mn_wifi uses);
# * tools, built into build/mininet-wifi/bin (gitignored; emulation/vm.py puts it on the
#   guest's PATH, the backend on its own): mnexec (mininet), wmediumd with the
#   station-calloc fix (../shared/third_party/README.md: without it stations started
#   after build() hear nobody) and hwsim_mgmt;
# * a matplotlib font cache in build/mpl-cache: importing mn_wifi imports pyplot, and
#   building that cache costs ~90 s under TCG at every VM boot otherwise.
#
# Sources: ../shared/third_party (override with FASTPAY_THIRD_PARTY), checked against
# the sha256 sums below. Where that folder does not exist, the same commits are cloned
# from upstream (needs git and access to GitHub; these machines have neither need).
# Nothing of theirs is copied into this repository.
set -euo pipefail
cd "$(dirname "$0")/.."

TP=${FASTPAY_THIRD_PARTY:-../shared/third_party}
OUT=build/mininet-wifi
PY=.venv/bin/python
PYPI=(six==1.17.0 bitstring==5.0.0 FlightRadarAPI==1.3.34 "setuptools<82" requests numpy)

# name  upstream  commit  tarball sha256
SOURCES="
mininet           mininet/mininet                 6eb8973c 39584565ac96bd4864bc0b83bfd8de893309619de3f580e5765f7ba938145fbd
mininet-wifi      intrig-unicamp/mininet-wifi     eaa5accb 2b9c1237c5014f1ca3226ae04f8d8128c0869b76e0a02dc5f11154236b6b318f
wmediumd          ramonfontes/wmediumd            1ea88d53 979a4e6f8e5c48cccc1c339be97397b53753e91ae3feeaa940af1aeb26fe5bf7
mac80211_hwsim_mgmt ramonfontes/mac80211_hwsim_mgmt 9d2cb213 96d609303ebee15b8d79b25b13da24331fd15935425de592d5220c9d3b91e911
"
declare -A WHEEL_SHA=(
  [mininet-2.3.1b4-py3-none-any.whl]=fe8b8e428c27f35b731196dd21ff82989dba2851e81a90fcc5109fd04316bcc5
  [mininet_wifi-2.7-py3-none-any.whl]=7555b426c54156b381a84c99dce6fec09a3ff6f2425ced42574fdbcba95d95be
)
PATCH=wmediumd-station-calloc.patch
PATCH_SHA=7047a8cd59283d21f11d5e72dc56d6e97720651542e2b43a75abcfb1dac3e392

say() { echo "setup(mininet-wifi): $*"; }
check_sha() {  # file sha256
  echo "$2  $1" | sha256sum -c --quiet - || { say "checksum mismatch: $1" >&2; exit 1; }
}

stamp_want=$(echo "$SOURCES $PATCH_SHA ${PYPI[*]}" | sha256sum | cut -d' ' -f1)
if [ -x "$OUT/bin/wmediumd" ] && [ -x "$OUT/bin/hwsim_mgmt" ] && [ -x "$OUT/bin/mnexec" ] \
   && [ "$(cat "$OUT/stamp" 2>/dev/null)" = "$stamp_want" ] \
   && "$PY" -c "import mn_wifi, mininet, FlightRadar24" 2>/dev/null \
   && [ -f build/mpl-cache/stamp ]; then
  say "already installed ($OUT/bin, .venv)"
  exit 0
fi

rm -rf "$OUT/src"
mkdir -p "$OUT/src" "$OUT/bin"
have_tp=0
[ -d "$TP" ] && have_tp=1

# Sources: unpack the pinned tarballs (or clone the same commits upstream).
while read -r name repo commit sha; do
  [ -n "$name" ] || continue
  if ((have_tp)); then
    tarball="$TP/$name-$commit.tar.gz"
    check_sha "$tarball" "$sha"
    tar -xzf "$tarball" -C "$OUT/src"
  else
    say "no $TP: cloning $repo at $commit"
    git clone -q "https://github.com/$repo" "$OUT/src/$name-$commit"
    git -C "$OUT/src/$name-$commit" checkout -q "$commit"
  fi
done <<< "$SOURCES"

# Python packages.
say "installing mininet, mn_wifi and their PyPI dependencies into .venv"
"$PY" -m pip install -q "${PYPI[@]}" 2> >(grep -v "is ignored" >&2)
if ((have_tp)); then
  for wheel in "${!WHEEL_SHA[@]}"; do check_sha "$TP/$wheel" "${WHEEL_SHA[$wheel]}"; done
  "$PY" -m pip install -q --no-deps "$TP/mininet-2.3.1b4-py3-none-any.whl" \
    "$TP/mininet_wifi-2.7-py3-none-any.whl" 2> >(grep -v "is ignored" >&2)
else
  "$PY" -m pip install -q --no-deps --no-build-isolation "$OUT/src/mininet-6eb8973c" \
    "$OUT/src/mininet-wifi-eaa5accb"
fi

# Tools.
say "building mnexec, wmediumd (with the station-calloc fix) and hwsim_mgmt"
cc -O2 -DVERSION=\"2.3.1b4\" "$OUT/src/mininet-6eb8973c/mnexec.c" -o "$OUT/bin/mnexec"
src=$OUT/src/wmediumd-1ea88d53
if ((have_tp)); then
  check_sha "$TP/$PATCH" "$PATCH_SHA"
  patch -s -d "$src" -p1 < "$TP/$PATCH"
else  # the same one-word fix, without the patch file
  sed -i 's/station = malloc(sizeof(\*station));/station = calloc(1, sizeof(*station));/' \
    "$src/wmediumd/config.c" "$src/wmediumd/wmediumd_dynamic.c"
fi
grep -q "calloc(1, sizeof(\*station))" "$src/wmediumd/wmediumd_dynamic.c"
for dir in "$src/wmediumd" "$OUT/src/mac80211_hwsim_mgmt-9d2cb213/hwsim_mgmt"; do
  make -C "$dir" > "$OUT/build.log" 2>&1 || { cat "$OUT/build.log" >&2; exit 1; }
done
install -m 0755 "$src/wmediumd/wmediumd" "$OUT/src/mac80211_hwsim_mgmt-9d2cb213/hwsim_mgmt/hwsim_mgmt" \
  "$OUT/bin/"
rm -rf "$OUT/src"

# matplotlib's font cache, prepared once (the VM copies it into its writable /tmp).
say "preparing the matplotlib font cache (build/mpl-cache)"
rm -rf build/mpl-cache
mkdir -p build/mpl-cache
MPLCONFIGDIR=$PWD/build/mpl-cache MPLBACKEND=Agg "$PY" -c "import matplotlib.pyplot"
touch build/mpl-cache/stamp

"$PY" -c "import mn_wifi.net" >/dev/null
echo "$stamp_want" > "$OUT/stamp"
say "installed: $(ls "$OUT/bin" | tr '\n' ' ')"
