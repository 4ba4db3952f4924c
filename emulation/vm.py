"""Run a command inside a QEMU/TCG guest of the Debian kernel, which has mac80211_hwsim.

The host kernel of these machines (and of CI) has no 802.11 stack, so anything that
needs radios re-executes itself in a VM. virtme-ng (``vng``) boots
``/boot/vmlinuz-<version>`` with the host's root filesystem shared read-only over
virtio-9p (a tmpfs overlay on top): the guest sees the project, its venv and the
Debian tools with no image to build. Writes vanish unless they go to a directory
passed as ``rwdirs`` -- results come back through those.

:func:`run_in_vm` is the one entry point (the emulation's ``run``, the pytest plugin
and later FastPay's own live tests use it):

* the command goes into a script in a scratch rwdir (a long command line would overflow
  the kernel command line), which ``cd``s, sets the environment and prints a marker;
* vng runs in its **own process group**; on timeout, error or Ctrl-C the whole group
  (vng *and* QEMU) is killed -- a killed vng alone would leave QEMU running;
* output is read through a pipe (QEMU truncates a regular file given as stdout); until
  the marker appears a progress line shows the boot time, then lines are streamed;
* the command's exit code is returned (124 on timeout);
* before it boots, the project's own packages are byte-compiled on the host
  (:func:`precompile`): the guest sees the tree read-only, so without ``__pycache__``
  every Python process in it (each daemon, the medium, the run) would compile the
  project's sources again, under TCG.

Guest wall clocks are wrong under TCG: measure with monotonic differences only.
"""

from __future__ import annotations

import compileall
import contextlib
import os
import select
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from emulation import hwsim

ROOT = Path(__file__).resolve().parent.parent
# Built by scripts/setup-mininet.sh (gitignored): mnexec, wmediumd, hwsim_mgmt for the
# Mininet-WiFi backend, and a prepared matplotlib font cache (importing mn_wifi imports
# pyplot; building the cache costs ~90 s under TCG at every boot).
TOOLS_DIR = ROOT / "build" / "mininet-wifi" / "bin"
MPL_CACHE = ROOT / "build" / "mpl-cache"
GUEST_MPL_DIR = "/tmp/fastpay-mpl"  # writable in the guest; emulation.report uses it too

# The packages byte-compiled before a boot (the venv's are compiled at install).
PACKAGES = ("emulation", "fastpayd", "protocol", "tests", "scripts", "examples")

IN_VM_ENV = "FASTPAY_EMU_IN_VM"
STARTED_MARKER = "@@fastpay-vm-command-started@@"
TIMEOUT_EXIT = 124


class VMError(RuntimeError):
    """The VM could not be started (missing kernel, vng, udev ...)."""


def in_vm() -> bool:
    """True when running inside a guest started by :func:`run_in_vm`."""
    return os.environ.get(IN_VM_ENV) == "1"


def needs_vm() -> bool:
    """True when radios need the VM: this kernel has no mac80211_hwsim."""
    return not hwsim.kernel_has_hwsim()


def precompile(root: Path = ROOT) -> bool:
    """Byte-compile the project's packages into their ``__pycache__`` (gitignored) with
    this interpreter, the one the guest runs; return whether all compiled. Quick when
    nothing changed (only stale files are written); an unwritable tree is left as is."""
    ok = True
    for name in PACKAGES:
        if (root / name).is_dir():
            ok = compileall.compile_dir(root / name, quiet=2, workers=1) and ok
    return bool(ok)


def find_kernel() -> Path:
    """Return the newest /boot/vmlinuz-* whose modules include mac80211_hwsim."""
    candidates = []
    for image in Path("/boot").glob("vmlinuz-*"):
        version = image.name.removeprefix("vmlinuz-")
        dep = Path("/lib/modules") / version / "modules.dep"
        if dep.exists() and "mac80211_hwsim" in dep.read_text(errors="replace"):
            candidates.append(image)
    if not candidates:
        raise VMError("no /boot/vmlinuz-* with mac80211_hwsim modules: "
                      "install the Debian package linux-image-amd64 (not the cloud flavour)")
    return max(candidates, key=lambda p: p.stat().st_mtime)


def find_vng() -> str:
    """Return the path of vng (the venv's first, so its helper scripts are on PATH)."""
    venv_vng = Path(sys.executable).parent / "vng"
    if venv_vng.exists():
        return str(venv_vng)
    found = shutil.which("vng")
    if not found:
        raise VMError("virtme-ng is not installed: pip install virtme-ng")
    return found


def _vm_path() -> str:
    # vng calls virtme-run and friends by name: the venv's bin must be on PATH.
    parts = [str(Path(sys.executable).parent)]
    if TOOLS_DIR.is_dir():
        parts.append(str(TOOLS_DIR))
    parts += os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").split(os.pathsep)
    for extra in ("/usr/local/sbin", "/usr/sbin", "/sbin"):
        if extra not in parts:
            parts.append(extra)
    return os.pathsep.join(dict.fromkeys(parts))


def _write_script(scratch: Path, argv: list[str], cwd: str, env: Mapping[str, str],
                  marker: bool = True) -> Path:
    lines = ["#!/bin/sh", f"cd {shlex.quote(cwd)} || exit 125",
             # Mininet-WiFi finds its radios in debugfs (/sys/kernel/debug/ieee80211).
             "mountpoint -q /sys/kernel/debug || "
             "mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null"]
    if MPL_CACHE.is_dir():  # the host's copy is read-only in the guest: matplotlib
        lines.append(f"mkdir -p {GUEST_MPL_DIR} && "  # wants a writable one
                     f"cp -r {shlex.quote(str(MPL_CACHE))}/. {GUEST_MPL_DIR}/")
    for key, value in env.items():
        lines.append(f"export {key}={shlex.quote(value)}")
    if marker:  # ends the boot-progress display; a terminal session has none
        lines.append(f"echo {STARTED_MARKER}")
    lines.append("exec " + " ".join(shlex.quote(a) for a in argv))
    script = scratch / "vm-command.sh"
    script.write_text("\n".join(lines) + "\n")
    script.chmod(0o755)
    return script


class _Progress:
    """A boot-progress line: a rich spinner on a terminal, a line every 10 s otherwise."""

    def __init__(self, title: str, stream: object) -> None:
        self.title = title
        self.start = time.monotonic()
        self.tty = hasattr(stream, "isatty") and stream.isatty()  # type: ignore[attr-defined]
        self._status = None
        self._last = 0.0
        if self.tty:
            from rich.console import Console  # imported only when shown

            self._status = Console(file=stream).status(self._text())  # type: ignore[arg-type]
            self._status.start()
        else:
            print(f"{title} ...", file=stream, flush=True)  # type: ignore[call-overload]
        self.stream = stream

    def _text(self) -> str:
        return f"{self.title} ({time.monotonic() - self.start:4.1f} s)"

    def tick(self) -> None:
        now = time.monotonic()
        if self._status is not None:
            self._status.update(self._text())
        elif now - self._last >= 10:
            self._last = now
            print(f"  ... {now - self.start:.0f} s", file=self.stream,  # type: ignore[call-overload]
                  flush=True)

    def done(self, message: str) -> None:
        if self._status is not None:
            self._status.stop()
        print(message, file=self.stream, flush=True)  # type: ignore[call-overload]


def _kill_group(pgid: int) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)


def run_in_vm(
    argv: list[str],
    *,
    rwdirs: Iterable[str | os.PathLike[str]] = (),
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    memory: str = "2G",
    cpus: int = 2,
    interactive: bool = False,
    on_line: Callable[[str], None] | None = None,
    stream: object = None,
    title: str = "Booting the QEMU/TCG VM",
    deadline: Callable[[], float | None] | None = None,
) -> int:
    """Run ``argv`` as root inside the VM and return its exit code.

    ``rwdirs`` are host directories the guest may write (same paths inside); ``cwd``
    defaults to the current directory; ``env`` is added to the guest environment
    (``FASTPAY_EMU_IN_VM=1`` and ``PATH`` are always set). Each output line after the
    command starts goes to ``on_line`` (default: written to ``stream``, default
    stdout). With ``interactive`` the terminal is handed to the guest instead (no
    progress, no capture). Returns 124 if ``timeout`` (seconds, including boot)
    expires, or once ``time.monotonic()`` passes what ``deadline()`` returns (asked
    every half second, so a caller can push it back while the command makes progress;
    captured runs only); the VM is always gone when this returns. Raises VMError if it
    cannot boot.
    """
    out = stream if stream is not None else sys.stdout
    kernel = find_kernel()
    vng = find_vng()
    precompile()
    cwd = str(cwd or os.getcwd())
    scratch = Path(tempfile.mkdtemp(prefix="fastpay-vm-"))
    guest_env = {"PATH": _vm_path(), IN_VM_ENV: "1", "HOME": "/root",
                 "MPLCONFIGDIR": GUEST_MPL_DIR, "MPLBACKEND": "Agg",
                 "PYTHONUNBUFFERED": "1", "TERM": os.environ.get("TERM", "dumb")}
    guest_env.update(env or {})
    script = _write_script(scratch, argv, cwd, guest_env, marker=not interactive)
    cmd = [vng, "--run", str(kernel), "--disable-kvm", "--force-9p", "--user", "root",
           "--memory", memory, "--cpus", str(cpus), "--rwdir", str(scratch)]
    for rw in rwdirs:
        cmd += ["--rwdir", str(rw)]
    cmd += ["--", str(script)]
    host_env = dict(os.environ, PATH=_vm_path())
    try:
        if interactive:
            return _run_interactive(cmd, host_env, timeout)
        return _run_captured(cmd, host_env, timeout, on_line, out,
                             f"{title} [{kernel.name}, TCG]", deadline)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _run_captured(cmd: list[str], env: dict[str, str], timeout: float | None,
                  on_line: Callable[[str], None] | None, out: object, title: str,
                  extend: Callable[[], float | None] | None = None) -> int:
    def emit(line: str) -> None:
        if on_line is not None:
            on_line(line)
        else:
            out.write(line + "\n")  # type: ignore[attr-defined]
            out.flush()  # type: ignore[attr-defined]

    start = time.monotonic()
    fixed = start + timeout if timeout else None
    deadline = fixed
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env, start_new_session=True)
    assert proc.stdout is not None
    progress = _Progress(title, out)
    boot_lines: list[str] = []
    started = False
    buffer = b""
    try:
        fd = proc.stdout.fileno()
        while True:
            if extend is not None:
                limits = [d for d in (fixed, extend()) if d is not None]
                deadline = min(limits) if limits else None
            wait = 0.5
            if deadline is not None:
                wait = max(0.0, min(wait, deadline - time.monotonic()))
            ready, _, _ = select.select([fd], [], [], wait)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for raw in lines:
                    line = raw.decode(errors="replace").rstrip("\r")
                    if started:
                        emit(line)
                    elif STARTED_MARKER in line:
                        started = True
                        progress.done(f"VM booted in {time.monotonic() - start:.1f} s")
                    else:
                        boot_lines.append(line)
            elif not started:
                progress.tick()
            if deadline is not None and time.monotonic() >= deadline:
                if not started:
                    progress.done("VM timed out while booting")
                emit(f"[vm] timeout after {time.monotonic() - start:.0f} s: killing QEMU")
                _kill_group(proc.pid)
                proc.wait()
                return TIMEOUT_EXIT
        if buffer and started:
            emit(buffer.decode(errors="replace"))
        code = proc.wait()
        if not started:
            progress.done("VM failed before the command started")
            for line in boot_lines[-40:]:
                emit(f"[vm] {line}")
            if code == 0:
                code = 125
        return code
    finally:
        # QEMU is a child of vng in the same group: never leave it behind.
        _kill_group(proc.pid)
        with contextlib.suppress(Exception):
            proc.wait(timeout=5)


def _run_interactive(cmd: list[str], env: dict[str, str], timeout: float | None) -> int:
    # The guest needs the terminal: start vng in its own process group and make that
    # group the terminal's foreground group (job control), so Ctrl-C reaches the guest
    # and reading the terminal does not stop it with SIGTTIN.
    tty_fd = sys.stdin.fileno()
    print("Booting the QEMU/TCG VM (about 25 s) ...", flush=True)
    proc = subprocess.Popen(cmd, env=env, process_group=0)
    old_ttou = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        with contextlib.suppress(OSError):
            os.tcsetpgrp(tty_fd, proc.pid)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return TIMEOUT_EXIT
    finally:
        _kill_group(proc.pid)
        with contextlib.suppress(OSError):
            os.tcsetpgrp(tty_fd, os.getpgrp())
        signal.signal(signal.SIGTTOU, old_ttou)
