"""How a daemon knows it runs in a lab (hacommon.labenv), and what depends on it: the
example key of configs/ is accepted in the lab and refused outside it (issue #4)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from hacommon.labenv import LAB_ENV, in_lab

pytestmark = pytest.mark.netns

PROBE = "from hacommon.labenv import in_lab; print(in_lab())"


def test_in_lab_needs_both_the_variable_and_a_namespace_of_that_lab(lab):
    h = lab.add_host("r1")
    other = __import__("halab").Lab()
    try:
        o = other.add_host("x")
        assert h.run([sys.executable, "-c", PROBE], check=True).stdout.strip() == "True"
        # the variable of another lab, or none, in a lab namespace: not this lab
        assert h.run([sys.executable, "-c", PROBE], env={LAB_ENV: other.id}, check=True).stdout.strip() == "False"
        assert h.run(["env", "-u", LAB_ENV, sys.executable, "-c", PROBE], check=True).stdout.strip() == "False"
        assert o.run([sys.executable, "-c", PROBE], check=True).stdout.strip() == "True"
    finally:
        other.teardown()
    # this process: the variable names a live lab, but we are in the host's namespace
    assert not in_lab({LAB_ENV: lab.id})


def test_the_example_file_checks_in_the_lab_and_not_outside(lab):
    from halab.boxconfig import write_box_config

    r1 = lab.add_host("r1")
    box = write_box_config(r1)
    check = [sys.executable, "-m", "ctsync", "-c", str(box.path), "--check"]
    cp = r1.run(check)
    assert cp.returncode == 0, cp.stderr
    cp = subprocess.run(check, capture_output=True, text=True, env={**os.environ, LAB_ENV: lab.id}, timeout=30)
    assert cp.returncode == 1
    assert "ctsync.key: this key is published with hapair" in cp.stderr
