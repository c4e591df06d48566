"""Shared pytest setup.

* Tests marked ``netns`` are skipped unless we are root and can create
  network namespaces.
* At session end, no namespace created by this process's labs may remain:
  a leaked lab is torn down and the session fails loudly.
* ``lab``: a fresh :class:`halab.Lab` per test, always torn down.
"""

import os

import pytest

import halab


def pytest_runtest_setup(item):
    if item.get_closest_marker("netns") is not None:
        halab.require_root_and_netns()


@pytest.fixture(scope="session", autouse=True)
def _halab_leak_check():
    yield
    live = [lab.id for lab in halab.live_labs()]
    errors = halab.teardown_all()
    left = halab.lab_namespaces(os.getpid())
    if live or errors or left:
        pytest.fail(
            "halab leak: labs not torn down by their tests: %s; teardown errors: %s; "
            "namespaces left: %s" % (live, errors, left),
            pytrace=False,
        )


@pytest.fixture
def lab():
    halab.require_root_and_netns()
    lab = halab.Lab()
    try:
        yield lab
    finally:
        lab.teardown()
