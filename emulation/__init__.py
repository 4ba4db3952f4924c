"""The live radio platform: hwsim radios, per-station D-Bus + wpa_supplicant, our medium.

Layers inside the package, each in its own module:

* :mod:`emulation.hwsim` -- the kernel module, its radios and its netlink protocol;
* :mod:`emulation.medium` -- our wmediumd: range, path loss, ACKs (its own process);
* :mod:`emulation.station` -- one radio in a namespace with dbus-daemon + wpa_supplicant;
* :mod:`emulation.network` -- builds, supervises and tears down a whole emulation;
* :mod:`emulation.mobility` -- static, waypoint, random walk and random waypoint models;
* :mod:`emulation.scenario` -- the TOML scenario description;
* :mod:`emulation.cli` / :mod:`emulation.run` / :mod:`emulation.shell` -- the user's side;
* :mod:`emulation.vm` -- re-running things in a QEMU/TCG guest when the kernel lacks hwsim;
* :mod:`emulation.backends` -- the backend registry (hwsim, Mininet-WiFi).

Nothing here imports FastPay code: FastPay daemons are started inside stations as
processes.
"""
