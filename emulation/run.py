"""``sudo python -m emulation.run [SCENARIO.toml]``: build, run, and talk to an emulation.

1. The scenario is read and checked (default: ``emulation/scenarios/default.toml``), and
   so is the machine (:mod:`emulation.requirements`): what is missing is named with the
   exact install commands, or installed with ``--install-missing``.
2. If this kernel has no mac80211_hwsim, the same command re-executes itself inside the
   QEMU/TCG VM (:mod:`emulation.vm`) with progress shown while it boots; the VM's exit
   code becomes ours and the report comes back through a shared writable directory.
   An interactive session gets the terminal passed through.
3. Otherwise the backend (``auto``: Mininet-WiFi if present, else hwsim) starts every
   station; then either the Mininet-style CLI opens (:mod:`emulation.cli`) or, with
   ``--batch``, the scenario's timeline runs headless.
4. Everything is torn down; ``--report FILE`` gets the run's JSON report. Where the
   start-up went (:mod:`emulation.startup`) is printed and goes under ``startup``; a run
   through the VM adds the host's ``vm_boot_s`` and ``command_to_first_payment_s``.

Exit status: 0 success, 1 a timeline step failed or the emulation stopped with an
error (e.g. the medium died), 2 bad usage or scenario, 3 the emulation could not
start, 124 the VM timed out.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

from emulation import backends, cost, fastpay, requirements, scenario, startup, vm
from emulation.cli import EmulationCLI, run_timeline
from emulation.network import EmulationError

ROOT = Path(__file__).resolve().parent.parent
# The timeline's line once the first transfer is staged: the host times it too.
FIRST_PAYMENT_LINE = re.compile(r"^\[\s*[\d.]+ s\] ok\s+mobile_transfer ")


def process_started() -> float:
    """When this process started, on the ``time.monotonic()`` clock (from /proc)."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # starttime, since boot
        return time.monotonic() - (time.clock_gettime(time.CLOCK_BOOTTIME) - started)
    except (OSError, ValueError, IndexError):
        return time.monotonic()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m emulation.run",
                                     description="Run a FastPay radio emulation.")
    parser.add_argument("scenario", nargs="?", default=str(scenario.DEFAULT_SCENARIO),
                        help="scenario TOML file (default: %(default)s)")
    parser.add_argument("--clients", type=int, metavar="N", default=None,
                        help="number of clients of the scenario's [crowd] (default: its "
                        "count); e.g. --clients 26 for the many-clients run's large size")
    parser.add_argument("--batch", action="store_true",
                        help="run the scenario's timeline without a CLI and exit")
    parser.add_argument("--report", metavar="FILE", help="write the run's JSON report here")
    parser.add_argument("--backend", choices=backends.NAMES, default=None,
                        help="station backend (default: the scenario's, else auto)")
    parser.add_argument("--no-vm", action="store_true",
                        help="never re-execute in the VM (fail if the kernel has no hwsim)")
    parser.add_argument("--install-missing", action="store_true",
                        help="install missing Debian/PyPI packages first (apt-get, pip)")
    parser.add_argument("--vm-timeout", type=float, default=3600.0,
                        help="seconds the whole VM run may take (default %(default)s)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = parse_args(argv)
    try:
        scen = scenario.load(args.scenario, clients=args.clients)
    except scenario.ScenarioError as exc:
        print(f"emulation: bad scenario: {exc}", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("emulation: needs root (network namespaces, kernel modules): "
              f"sudo {sys.executable} -m emulation.run ...", file=sys.stderr)
        return 2
    use_vm = not vm.in_vm() and vm.needs_vm()
    needs = requirements.missing(vm=use_vm)
    if needs and args.install_missing:
        requirements.install(needs)
        needs = requirements.missing(vm=use_vm)
    if needs:
        print(f"emulation: cannot run yet.\n{requirements.explain(needs)}", file=sys.stderr)
        return 3
    if use_vm:
        if args.no_vm:
            print("emulation: this kernel has no mac80211_hwsim and --no-vm was given",
                  file=sys.stderr)
            return 3
        return _rerun_in_vm(args, argv, len(scen.stations))
    return _run_here(args, scen)


def vm_memory(stations: int) -> str:
    """The guest's memory for a run of ``stations``: each station's dbus-daemon,
    wpa_supplicant and fastpayd take ~50 MiB beside the run's own ~1 GiB; never less
    than 2 GiB (a 30-station run in 2 GiB slowed to a crawl)."""
    return f"{max(2048, 1024 + 64 * stations)}M"


def _rerun_in_vm(args: argparse.Namespace, argv: list[str] | None, stations: int) -> int:
    forwarded = list(sys.argv[1:] if argv is None else argv)
    rwdirs = []
    if args.report:
        report = Path(args.report).resolve()
        report.parent.mkdir(parents=True, exist_ok=True)
        rwdirs.append(str(report.parent))
        forwarded = _replace_report(forwarded, str(report))
    forwarded = [a for a in forwarded if a != "--install-missing"]
    forwarded[:0] = ["--no-vm"]  # inside, never recurse
    scen_path = Path(args.scenario).resolve()
    forwarded = [str(scen_path) if a == args.scenario else a for a in forwarded]
    interactive = not args.batch and sys.stdin.isatty()
    print("emulation: this kernel has no mac80211_hwsim; running inside a QEMU/TCG VM "
          "(virtme-ng, Debian kernel)", flush=True)
    t0 = process_started()
    marks: dict[str, float] = {}

    def on_line(line: str) -> None:
        now = time.monotonic()
        # The first line comes once the guest's run has started (boot + its imports).
        marks.setdefault("vm_boot_s", now - t0)
        if "first_payment" not in marks and FIRST_PAYMENT_LINE.match(line):
            marks["first_payment"] = now - t0
            line += f"   [{now - t0:.1f} s after the command started]"
        print(line, flush=True)

    try:
        code = vm.run_in_vm([sys.executable, "-m", "emulation.run", *forwarded],
                            rwdirs=rwdirs, cwd=str(ROOT), env={"PYTHONPATH": str(ROOT)},
                            timeout=args.vm_timeout, interactive=interactive,
                            title="Booting the VM", on_line=on_line,
                            memory=vm_memory(stations))
    except vm.VMError as exc:
        print(f"emulation: cannot start the VM: {exc}", file=sys.stderr)
        return 3
    host = {"vm_boot_s": marks.get("vm_boot_s"),
            "command_to_first_payment_s": marks.get("first_payment"),
            "command_s": time.monotonic() - t0}
    host = {k: None if v is None else round(v, 3) for k, v in host.items()}
    print("emulation: on the host: " + ", ".join(
        f"{k.removesuffix('_s').replace('_', ' ')} {'-' if v is None else f'{v:.1f} s'}"
        for k, v in host.items()), flush=True)
    if args.report and Path(args.report).exists():
        try:
            report = json.loads(Path(args.report).read_text())
            report.setdefault("startup", {})["host"] = host
            Path(args.report).write_text(json.dumps(report, indent=2, default=str) + "\n")
        except (OSError, ValueError) as exc:
            print(f"emulation: cannot add the host's timings to the report: {exc}",
                  file=sys.stderr)
    return code


def _replace_report(argv: list[str], absolute: str) -> list[str]:
    out = []
    skip = False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg == "--report" and i + 1 < len(argv):
            out += ["--report", absolute]
            skip = True
        elif arg.startswith("--report="):
            out.append(f"--report={absolute}")
        else:
            out.append(arg)
    return out


def _run_here(args: argparse.Namespace, scen: scenario.Scenario) -> int:
    try:
        cls = backends.backend_class(args.backend or scen.backend)
    except backends.BackendUnavailable as exc:
        print(f"emulation: {exc}", file=sys.stderr)
        return 3
    # SIGTERM (e.g. a timeout killing us) must still tear everything down.
    signal.signal(signal.SIGTERM, _interrupt)
    net = cls(scen.stations, area=scen.area, seed=scen.seed, pathloss=scen.pathloss)
    report: dict[str, Any] = {"scenario": scen.name, "scenario_file": str(scen.path),
                              "backend": cls.backend, "mode": "batch" if args.batch else "cli",
                              "success": False, "error": None}
    t0 = time.monotonic()
    run_marks: dict[str, float] = {"process_to_start_s": t0 - process_started()}
    net.progress = lambda line: print(line, flush=True)
    # The keys are made while the stations start (a process of its own).
    keygen = fastpay.start_keygen(scen)
    # ... and fastpayd's modules imported, once, by the fork server of every daemon.
    forkserver = fastpay.start_forkserver() if keygen is not None else None
    print(f"emulation: starting {len(scen.stations)} station(s) ({cls.backend} backend) ...",
          flush=True)
    try:
        net.start()
    except EmulationError as exc:
        if keygen is not None:
            keygen.discard()
        if forkserver is not None:
            forkserver.stop()
        print(f"emulation: cannot start: {exc}", file=sys.stderr)
        report["error"] = str(exc)
        _write_report(args.report, report)
        return 3
    layer: fastpay.FastPayLayer | None = None
    try:
        net.write_state()
        run_marks["stations_s"] = time.monotonic() - t0
        print(f"emulation: ready in {time.monotonic() - t0:.1f} s", flush=True)
        # FastPay's layer: one fastpayd per authority/client station (none: plain radios).
        try:
            layer = fastpay.attach(net, scen, log=lambda m: print(m, flush=True),
                                   keygen=keygen, forkserver=forkserver)
            run_marks["fastpayd_s"] = time.monotonic() - t0 - run_marks["stations_s"]
            if layer is not None:
                layer.report_path = args.report  # the CLI's 'plot' draws next to it
        except Exception as exc:
            print(f"emulation: cannot start fastpayd: {exc}", file=sys.stderr)
            report["error"] = f"fastpayd: {exc}"
            net.stop()
            _write_report(args.report, report)
            return 3
        cli = EmulationCLI(net)
        if args.batch:
            results = run_timeline(cli, scen.timeline, net)
            while not net.failed.is_set() and net.now() < scen.duration:
                net.failed.wait(min(1.0, scen.duration - net.now()))
            report["timeline"] = results
            ok = all(r["ok"] for r in results) and len(results) == len(scen.timeline)
        else:
            cli.cmdloop()
            ok = True
        if net.failed.is_set():
            ok = False
            report["error"] = str(net.error)
        report["success"] = ok
        report["final_positions"] = {k: list(v) for k, v in net.positions().items()}
        if not net.failed.is_set():
            report["medium"] = net.medium_stats()
        report["network"] = net.describe()
    except KeyboardInterrupt:
        report["error"] = "interrupted"
        ok = False
    finally:
        if keygen is not None:  # used by attach() by now, or never to be
            keygen.discard()
        if forkserver is not None and layer is None:
            forkserver.stop()
        if layer is not None:  # daemons stop before their stations
            report.update(layer.finish(args.report))
        report["seconds"] = round(time.monotonic() - t0, 3)
        report["startup"] = _startup(net, layer, run_marks, t0)
        startup.print_table(report["startup"])
        if layer is not None:
            report["cost"] = _cost(layer, report["startup"], len(scen.stations))
            cost.print_table(report["cost"])
        net.stop()
    _write_report(args.report, report)
    if net.failed.is_set():
        print(f"emulation: FAILED: {net.error}", file=sys.stderr)
        return 1
    print(f"emulation: {'success' if ok else 'FAILED'}", flush=True)
    return 0 if ok else 1


def _startup(net: Any, layer: fastpay.FastPayLayer | None, marks: dict[str, float],
             t0: float) -> dict[str, Any]:
    """The report's start-up breakdown (:mod:`emulation.startup`)."""
    run = dict(marks)
    # The backend's own phases (hwsim: medium_ready_s; Mininet-WiFi: import_s, ...).
    run.update({f"network_{k}": v for k, v in getattr(net, "timings", {}).items()
                if isinstance(v, int | float)})
    if layer is not None:
        run.update(layer.timings)
        first = next((r["t"] for r in layer.records if r["event"] == "transfer_requested"),
                     None)
        if first is not None:
            run["ready_to_first_payment_s"] = first - layer.t0
            run["process_to_first_payment_s"] = first - t0 + marks["process_to_start_s"]
    stations = net.startup_breakdown() if hasattr(net, "startup_breakdown") else {}
    daemons = layer.startup_breakdown() if layer is not None else {}
    out: dict[str, Any] = {
        "run": {k: round(v, 3) for k, v in run.items()},
        "stations": stations, "daemons": daemons,
        "per_station_s": startup.summary([s.get("total_s") for s in stations.values()]),
        "per_daemon_s": startup.summary([d.get("total_s") for d in daemons.values()]),
    }
    return out


def _cost(layer: fastpay.FastPayLayer, started: dict[str, Any], stations: int
          ) -> dict[str, Any]:
    """The report's cost per station (:func:`emulation.cost.per_station`): start-up is
    the stations' and the daemons' phases of ``started["run"]``."""
    run = started.get("run", {})
    parts = [run.get(k) for k in ("stations_s", "fastpayd_s")]
    total = sum(p for p in parts if p is not None) if any(p is not None for p in parts) \
        else None
    return cost.per_station(layer.daemon_costs(), {n: d.role for n, d in layer.daemons.items()},
                            total, stations)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _write_report(path: str | None, report: dict[str, Any]) -> None:
    if path:
        Path(path).write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"emulation: report written to {path}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
