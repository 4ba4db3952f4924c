"""The requirement check names packages and exact install commands."""

from __future__ import annotations

import sys

from emulation import requirements


def test_missing_on_this_machine_is_empty() -> None:
    # The project's setup installs everything; a gap here is a setup bug worth a failure.
    assert requirements.missing() == [], requirements.explain(requirements.missing())


def test_install_commands_group_by_kind() -> None:
    needs = [n for n in requirements.NEEDS if n.package in ("wpasupplicant", "iw", "virtme-ng")]
    commands = requirements.install_commands(needs)
    assert commands == [
        ["apt-get", "install", "-y", "--no-install-recommends", "iw", "wpasupplicant"],
        [sys.executable, "-m", "pip", "install", "virtme-ng"],
    ]


def test_explain_names_what_and_how() -> None:
    text = requirements.explain([requirements.NEEDS[0]])
    assert "wpa_supplicant (wpasupplicant)" in text
    assert "apt-get install" in text and "--install" in text


def test_vm_only_needs_skipped_when_not_asked() -> None:
    assert all(not n.vm_only for n in requirements.missing(vm=False))
