"""Installable into an existing environment: ranges in setup.cfg, the tested set pinned in
constraints.txt, which `make install` (and so CI) uses."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _requirements(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_install_requires_takes_ranges_and_the_constraints_pin_every_one_of_them():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    required = _requirements(cfg["options"]["install_requires"])
    extras = {name: _requirements(text) for name, text in cfg["options.extras_require"].items()}
    assert {"latent", "fid", "test"} <= set(extras)
    # no exact pin forces a user's torch out
    assert not [r for r in required + sum(extras.values(), []) if "==" in r]
    assert {"torch", "torchvision", "scipy", "google-crc32c", "pyyaml"} <= {_name(r) for r in required}
    pins = {
        _name(line.split("==")[0]): line.split("==")[1]
        for line in _requirements((ROOT / "constraints.txt").read_text())
    }
    for requirement in required + extras["test"]:
        assert _name(requirement) in pins, requirement  # the tested version of every dependency is fixed
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"


def test_make_install_and_its_stamp_use_the_constraints():
    makefile = (ROOT / "Makefile").read_text()
    assert "-c constraints.txt" in makefile and "constraints.txt | sha256sum" in makefile
