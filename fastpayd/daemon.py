"""Run a node until told to stop: signals, sd_notify, exit status.

* ``SIGTERM``/``SIGINT``: stop accepting, abort in-flight control commands, flush owed
  replies (each still waits for its commit), commit what is staged, close, exit 0.
* ``SIGHUP``: :meth:`fastpayd.node.Node.reload` (log level, peers directory); the result is
  logged and recorded as an event; a bad file is reported and the old config kept.
* sd_notify: ``READY=1`` once the link and the control socket are up, ``WATCHDOG=1``
  keep-alives, ``RELOADING=1``/``READY=1`` around a reload, ``STOPPING=1`` on shutdown.
* A storage failure (a COMMIT that raised) stops the node with exit status 1: replies
  cannot be released any more, and a restart rebuilds from the disk.

Exit status (the one table, :data:`fastpayd.errors.EXIT_CODES`, docs/cli.md): ``EXIT_OK``
0 stopped by SIGTERM/SIGINT, ``EXIT_FAILURE`` 1 failed while running (storage, link, I/O),
``EXIT_CONFIG`` 2 usage or configuration error (the message names the file and the key),
``EXIT_IN_USE`` 5 another running daemon holds this node's state directory or control socket.  Each
:class:`~fastpayd.errors.FastpaydError` carries the status it means.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys

from fastpayd.config import ConfigError, NodeConfig, load_node_config
from fastpayd.errors import EXIT_CONFIG, EXIT_FAILURE, EXIT_INTERRUPTED, FastpaydError
from fastpayd.node import Node
from fastpayd.notify import Notifier

log = logging.getLogger("fastpayd")

PROFILE_ENV = "FASTPAYD_PROFILE"  # path: run under cProfile and dump the stats there

# Young-generation threshold while serving.  Every request allocates a few dozen
# short-lived containers (decoded messages, models, lists); with the default of 700 the
# collector runs every handful of requests and, through the older generations, keeps
# rescanning every account record held in memory.  Objects freed by reference counting
# never reach the collector, so a larger threshold only delays cycle collection.
GC_THRESHOLD = (50_000, 20, 10)


def tune_gc() -> None:
    """After start-up: move everything alive now out of the collector's view, collect less.

    The accounts loaded at start live as long as the process; ``gc.freeze()`` keeps the
    collector from scanning them again on every full collection.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


def node_class(role: str) -> type[Node]:
    if role == "authority":
        from fastpayd.authority import AuthorityNode

        return AuthorityNode
    from fastpayd.client import ClientNode

    return ClientNode


async def serve(config: NodeConfig) -> int:
    """Run the node described by ``config``; return the exit status."""
    notifier = Notifier()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    status = 0
    node_ref: list[Node] = []

    def on_hup() -> None:
        if not node_ref:
            return
        notifier.reloading()
        try:
            changed = node_ref[0].reload()
            log.info("SIGHUP: reloaded config (%s)", ", ".join(changed) or "nothing changed")
        except (ConfigError, OSError) as exc:
            log.error("SIGHUP: reload failed, keeping the current config: %s", exc)
        notifier.ready()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, on_hup)
    try:
        async with node_class(config.role).open(config) as node:
            node_ref.append(node)
            node.db.on_failure = stop.set
            tune_gc()
            listen = node.link.local_address if node.link else "-"
            notifier.ready(f"{config.name} serving on {listen}")
            notifier.start_watchdog()
            log.info("ready: %s %s, link %s on %s, control %s", config.role, config.name,
                     config.link.kind, listen,
                     config.control_socket)
            await stop.wait()
            if node.db.failed is not None:
                status = 1
            log.info("stopping")
            notifier.stopping()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        await notifier.close()
    log.info("stopped")
    return status


def run(config_path: str, role: str | None) -> int:
    """Entry point of ``fastpayd --config FILE``: returns the process exit status."""
    try:
        config = load_node_config(config_path)
    except ConfigError as exc:
        print(f"fastpayd: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if role is not None and role != config.role:
        print(f"fastpayd: --role {role} but {config.path}: [node].role = {config.role!r}",
              file=sys.stderr)
        return EXIT_CONFIG
    logging.basicConfig(
        level=config.log_level.upper(),
        format=f"%(asctime)s fastpayd[{config.name}] %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    profile_path = os.environ.get(PROFILE_ENV)
    try:
        if profile_path:
            # Developer aid: profile the event loop thread, stats written at exit.
            import cProfile

            with cProfile.Profile() as prof:
                status = asyncio.run(serve(config))
            prof.dump_stats(profile_path)
            return status
        return asyncio.run(serve(config))
    except FastpaydError as exc:  # each says which exit status it means
        print(f"fastpayd: {exc}", file=sys.stderr)
        return exc.exit_status
    except OSError as exc:
        print(f"fastpayd: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
