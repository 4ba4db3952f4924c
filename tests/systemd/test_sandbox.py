"""fastpayd works inside the main walls of ``fastpayd@.service``'s sandbox.

This machine has no systemd as PID 1, so the unit cannot be started for real.
The test rebuilds the sandbox's load-bearing parts with the kernel features
systemd itself uses, around a real ``fastpayd`` authority:

* ``ProtectSystem=strict`` + ``StateDirectory=`` + ``RuntimeDirectory=``: a
  private mount namespace where every mount is read-only except the node's
  state directory and control-socket directory;
* ``User=`` (an unprivileged user), ``NoNewPrivileges=yes``,
  ``CapabilityBoundingSet=`` (empty), ``UMask=0077``;
* ``MemoryDenyWriteExecute=yes``: the kernel's own W^X switch
  (``PR_SET_MDWE``), which refuses what systemd's seccomp rule refuses.

Under all that the daemon must reach READY, answer its control socket, cast and
persist a vote, and stop cleanly on SIGTERM.

The checkout may sit where the service user cannot read it (a clean clone in a
``mktemp -d`` directory is 0700): inside the mount namespace, before privileges are
dropped, the checkout is bind-mounted into the world-traversable scratch directory and
the daemon runs from there (a bind mount does not inherit the permissions of the path
above the original). If the service user still cannot run the interpreter (e.g. a base
Python under a private home), the test is skipped with that reason. Not covered here (they need
systemd): the system-call filter and address-family list, PrivateUsers,
PrivateTmp, ProtectProc.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_helpers import NotifySocket, ask_for_vote, control, make_network, started
from sd_helpers import REPO, require_tool

import protocol
from fastpayd.keys import read_key

PR_SET_MDWE = 65
PR_GET_MDWE = 66
PR_MDWE_REFUSE_EXEC_GAIN = 1

# Mount namespace: the checkout bound where the service user can reach it, rw binds of
# the two writable directories, everything else read-only.
SANDBOX = r"""
state=$1; rundir=$2; repo=$3; checkout=$4; shift 5
mount --bind "$repo" "$checkout"
mount --bind "$state" "$state"
mount --bind "$rundir" "$rundir"
findmnt -rno TARGET | while read -r target; do
    case "$target" in
        /proc|/proc/*|/sys|/sys/*|/dev|/dev/*|"$state"|"$rundir") continue ;;
    esac
    mount -o remount,bind,ro "$target"
done
exec "$@"
"""

# Last step: the umask and W^X, then fastpayd's main() in this same process (the
# venv's interpreter may live where the unprivileged user cannot exec it again).
HARDEN = r"""
import ctypes, os, sys
sys.path.insert(0, sys.argv.pop(1))  # the checkout, as bound inside the namespace
os.umask(0o077)
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:
    sys.exit("PR_SET_MDWE failed: errno %d" % ctypes.get_errno())
from fastpayd.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


def kernel_has_mdwe() -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    return int(libc.prctl(PR_GET_MDWE, 0, 0, 0, 0)) >= 0


@pytest.fixture
def sandbox_root() -> Iterator[Path]:
    """A world-traversable scratch directory (pytest's tmp_path is private to root)."""
    top = Path(tempfile.mkdtemp(prefix="fastpay-sandbox-"))
    top.chmod(0o755)
    try:
        yield top
    finally:
        shutil.rmtree(top, ignore_errors=True)


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def test_fastpayd_runs_in_the_unit_sandbox(sandbox_root: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: builds a mount namespace and drops to an unprivileged user")
    if not kernel_has_mdwe():
        pytest.skip("this kernel has no PR_SET_MDWE (Linux < 6.3)")
    for tool, package in (("unshare", "util-linux"), ("setpriv", "util-linux"),
                          ("findmnt", "util-linux"), ("mount", "mount")):  # fmt: skip
        require_tool(tool, package)
    user = pwd.getpwnam("nobody")
    net, port = make_network(sandbox_root)
    config = net / "auth0.toml"
    # What systemd prepares: the key readable by the service user alone, and the
    # state and runtime directories owned by it.
    key = net / "auth0.key"
    os.chown(key, user.pw_uid, user.pw_gid)
    key.chmod(0o400)
    state_dir, run_dir = net / "state" / "auth0", net / "run"
    for d, mode in ((state_dir, 0o700), (run_dir, 0o750)):
        d.mkdir(parents=True)
        os.chown(d, user.pw_uid, user.pw_gid)
        d.chmod(mode)
    checkout = sandbox_root / "checkout"
    checkout.mkdir()
    python = Path(sys.executable)
    if python.is_relative_to(REPO):  # the venv inside the checkout: run it from the bind
        python = checkout / python.relative_to(REPO)

    def sandboxed(*argv: str) -> list[str]:
        return [
            "unshare", "--mount", "--propagation", "private",
            "sh", "-c", SANDBOX, "sandbox", str(state_dir), str(run_dir), str(REPO),
            str(checkout), "--",
            "setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups",
            "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all", str(python), *argv,
        ]  # fmt: skip

    probe = subprocess.run(
        sandboxed("-c", f"import sys; sys.path.insert(0, {str(checkout)!r}); "
                  "import fastpayd.daemon, nacl, msgpack, pydantic"),
        capture_output=True, text=True, timeout=120, check=False)
    if probe.returncode != 0:
        pytest.skip(f"user {user.pw_name} cannot run this checkout's Python even from a "
                    f"bind mount: {(probe.stderr or probe.stdout).strip()[-300:]}")
    notify = NotifySocket(sandbox_root / "notify.sock")
    (sandbox_root / "notify.sock").chmod(0o777)  # like systemd's, writable by the service
    command = sandboxed("-c", HARDEN, str(checkout))
    try:
        with started(config, notify, sandbox_root / "fastpayd.log", command) as daemon:
            daemon.expect("READY")
            status = control(run_dir / "auth0.sock", {"cmd": "status"})
            assert status["ok"] is True, status
            # The walls are really up around the process that answered.
            assert status["pid"] == daemon.proc.pid
            st = proc_status(daemon.proc.pid)
            assert st["Uid"].split()[0] == str(user.pw_uid)
            assert st["NoNewPrivs"] == "1"
            assert int(st["CapBnd"], 16) == 0 and int(st["CapEff"], 16) == 0
            mountinfo = Path(f"/proc/{daemon.proc.pid}/mountinfo").read_text().splitlines()
            root_opts = next(m.split()[5] for m in mountinfo if m.split()[4] == "/")
            assert root_opts.split(",")[0] == "ro", root_opts
            libc = ctypes.CDLL(None, use_errno=True)
            assert libc.prctl(PR_GET_MDWE, 0, 0, 0, 0) >= 0  # (our own flag is not set)

            # A vote: the daemon must write and fsync its database inside the walls.
            client = read_key(net / "client0.key")
            transfer = protocol.Transfer(
                sender=client.public_key,
                recipient=protocol.KeyPair.generate().public_key,
                amount=5,
                sequence_number=0,
            )
            vote = ask_for_vote(("127.0.0.1", port), protocol.TransferOrder.sign(transfer, client))
            assert isinstance(vote, protocol.SignedTransferOrder), vote

            os.kill(daemon.proc.pid, signal.SIGTERM)
            daemon.expect("STOPPING")
            assert daemon.wait() == 0, daemon.output()
    finally:
        notify.close()
    db = state_dir / "fastpay.sqlite"
    # UMask=0077: the state is the service user's alone.
    assert db.stat().st_uid == user.pw_uid
    assert stat.S_IMODE(db.stat().st_mode) == 0o600, oct(db.stat().st_mode)
    # Nothing was written outside the two writable directories.
    assert sorted(p.name for p in net.iterdir()) == sorted(
        ["auth0.key", "auth0.toml", "client0.key", "client0.toml", "committee.toml",
         "state", "run"]
    )  # fmt: skip
