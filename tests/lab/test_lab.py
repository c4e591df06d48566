"""Tests of the halab network-namespace lab itself.

They need root (real namespaces, real packets).  They also document the
lab's guarantees: nothing is created in the host namespace, the launcher
refuses foreign/fake hosts, and teardown leaves nothing behind on every path
(normal, exception, Ctrl-C, SIGTERM, and SIGKILL followed by
``hapair-lab clean``).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import types

import pytest

import halab
from halab import Host, Lab, LabCommandError, LabError, _ns, wait_for
from halab.daemons import keepalived_vrrp_conf, start_keepalived

pytestmark = pytest.mark.netns

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HAPAIR_LAB = [sys.executable, "-m", "halab.cli"]


def _pair_on_bridge(lab, a="10.0.0.2/24", b="10.0.0.3/24"):
    br = lab.add_bridge("lan")
    r1 = lab.add_host("r1")
    r2 = lab.add_host("r2")
    lab.connect(r1, br, "eth0", a)
    lab.connect(r2, br, "eth0", b)
    return br, r1, r2


def _host_ifnames():
    return set(os.listdir("/sys/class/net"))


def _comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None


# --------------------------------------------------------------------------
# topology


def test_two_hosts_on_bridge_ping(lab):
    before = _host_ifnames()
    br, r1, r2 = _pair_on_bridge(lab)
    assert r1.netns == f"{lab.id}-r1"
    assert br.netns == f"{lab.id}-sw"
    assert r1.ping("10.0.0.3", count=2)
    assert r2.ping("10.0.0.2", count=2)
    # Nothing appeared in the host namespace.
    assert _host_ifnames() == before
    assert {"lan", "r1-eth0", "r2-eth0"}.isdisjoint(_host_ifnames())
    # The bridge is configured as documented.
    info = json.loads(br.switch.ip("-d", "-j", "link", "show", "lan").stdout)[0]
    data = info["linkinfo"]["info_data"]
    assert data["stp_state"] == 0
    assert data["forward_delay"] == 0
    assert data["mcast_snooping"] == 0
    assert "UP" in info["flags"]
    assert sorted(br.ports()) == ["r1-eth0", "r2-eth0"]


def test_direct_link(lab):
    r1 = lab.add_host("r1")
    r2 = lab.add_host("r2")
    lab.link(r1, "sync0", "172.16.0.1/30", r2, "sync0", "172.16.0.2/30")
    assert r1.ipv4_addrs("sync0") == ["172.16.0.1/30"]
    assert r2.ipv4_addrs("sync0") == ["172.16.0.2/30"]
    assert r1.ping("172.16.0.2")
    assert r2.ping("172.16.0.1")
    assert "sync0" not in _host_ifnames()


def test_state_helpers(lab):
    br = lab.add_bridge("lan")
    r1 = lab.add_host("r1")
    r2 = lab.add_host("r2", ipv6=False)
    port1 = lab.connect(r1, br, "eth0", ["10.0.0.2/24", "10.0.1.2/24"], mac="02:00:00:00:00:01")
    port2 = lab.connect(r2, br, "eth0", "10.0.0.3/24")
    assert (port1, port2) == ("r1-eth0", "r2-eth0")
    assert r1.ipv4_addrs("eth0") == ["10.0.0.2/24", "10.0.1.2/24"]
    assert r1.has_addr("eth0", "10.0.1.2") and not r1.has_addr("eth0", "10.0.0.3")
    assert r1.link_mac("eth0") == "02:00:00:00:00:01"
    assert r2.sysctl_get("net.ipv6.conf.all.disable_ipv6") == "1"

    assert r2.neigh("10.0.0.2", dev="eth0") == (None, None)
    assert r2.ping("10.0.0.2")
    mac, state = r2.neigh("10.0.0.2", dev="eth0")
    assert mac == "02:00:00:00:00:01" and state in ("REACHABLE", "STALE", "DELAY")
    assert lab.fdb_port(br, "02:00:00:00:00:01") == "r1-eth0"
    assert lab.fdb_port(br, r2.link_mac("eth0")) == "r2-eth0"
    assert lab.fdb_port(br, "02:99:99:99:99:99") is None

    r1.sysctl("net.ipv4.ip_forward", 1)
    assert r1.sysctl_get("net.ipv4.ip_forward") == "1"
    assert r2.sysctl_get("net.ipv4.ip_forward") == "0"  # per namespace

    lab.set_link(r1, "eth0", up=False)
    assert not r1.link_up("eth0")
    assert not r2.ping("10.0.0.2", timeout=1)
    lab.set_link(r1, "eth0", up=True)
    assert r1.link_up("eth0")
    wait_for(lambda: r2.ping("10.0.0.2", timeout=1), timeout=10, what="ping after link up")
    # A bridge port can be failed too (the switch side of the cable).
    lab.set_link(br, "r1-eth0", up=False)
    assert not r2.ping("10.0.0.2", timeout=1)
    lab.set_link(br, "r1-eth0", up=True)

    cp = r1.run(["ip", "-4", "addr"], check=True, timeout=10)
    assert "10.0.0.2/24" in cp.stdout
    assert r1.sh("echo $((1+2))").stdout.strip() == "3"
    with pytest.raises(LabCommandError) as ei:
        r1.sh("echo oops >&2; exit 3", check=True)
    assert isinstance(ei.value, subprocess.CalledProcessError)
    assert ei.value.returncode == 3 and "oops" in str(ei.value)
    with pytest.raises(TypeError):
        r1.run("ip addr")


def test_interface_names(lab):
    br = lab.add_bridge("lan")
    h = lab.add_host("longhostname1")
    p0 = lab.connect(h, br, "eth0")
    p1 = lab.connect(h, br, "eth1")
    assert p0 == "longhostname1-e"
    assert p1 != p0 and len(p1) <= 15
    assert sorted(br.ports()) == sorted([p0, p1])
    with pytest.raises(LabError):
        lab.connect(h, br, "a-name-that-is-too-long")
    with pytest.raises(LabError):
        lab.add_host("bad/name")
    with pytest.raises(LabError):
        lab.add_host("sw")
    with pytest.raises(LabError):
        lab.add_host("longhostname1")


# --------------------------------------------------------------------------
# teardown


def _assert_gone(namespaces, pids=(), workdir=None):
    for n in namespaces:
        assert not os.path.lexists(_ns.netns_path(n)), f"namespace {n} left"
    for pid in pids:
        assert not _ns.pid_alive(pid), f"process {pid} ({_comm(pid)}) left"
    if workdir is not None:
        assert not os.path.exists(workdir)


def test_teardown_leaves_nothing():
    lab = Lab()
    try:
        br, r1, r2 = _pair_on_bridge(lab)
        lab.link(r1, "sync0", "172.16.0.1/30", r2, "sync0", "172.16.0.2/30")
        p = r1.start(["sleep", "1000"])
        cap = lab.capture(br, "r1-eth0", "t.pcap")
        # A detached process the lab did not start: found via `ip netns pids`.
        r2.sh("setsid sleep 1000 </dev/null >/dev/null 2>&1 &", check=True)
        stray = wait_for(lambda: [q for q in _ns.ns_pids(r2.netns) if _comm(q) == "sleep"],
                         what="stray sleep")
        namespaces, workdir = lab.namespaces, lab.workdir
        assert len(namespaces) == 3 and os.path.isdir(workdir)
        pids = [p.pid, *stray, cap._popen.pid]
    finally:
        lab.teardown()
    _assert_gone(namespaces, pids, workdir)
    assert lab.torn_down and lab not in halab.live_labs()
    assert not p.alive() and not cap.running()
    lab.teardown()  # idempotent
    with pytest.raises(LabError):
        lab.add_host("r3")
    with pytest.raises(LabError):
        r1.start(["sleep", "1"])


def test_teardown_on_exception_and_partial_lab():
    with pytest.raises(RuntimeError):
        with Lab() as lab:
            r1 = lab.add_host("r1")
            r1.start(["sleep", "1000"])
            namespaces, workdir = lab.namespaces, lab.workdir
            raise RuntimeError("boom")
    _assert_gone(namespaces, workdir=workdir)

    # A lab that fails half-way through building is still removed.
    with pytest.raises(LabError):
        with Lab() as lab:
            br = lab.add_bridge("lan")
            r1 = lab.add_host("r1")
            namespaces = lab.namespaces
            lab.connect(r1, br, "eth0", "300.1.2.3/24")  # invalid address
    _assert_gone(namespaces)


def test_keep_workdir():
    lab = Lab(keep_workdir=True)
    try:
        lab.add_host("r1")
        with open(os.path.join(lab.workdir, "note"), "w") as f:
            f.write("x")
    finally:
        lab.teardown()
    try:
        assert os.path.exists(os.path.join(lab.workdir, "note"))
        _assert_gone(lab.namespaces)
    finally:
        shutil.rmtree(lab.workdir, ignore_errors=True)


_CREATOR = """
import faulthandler, signal, sys, time
# As a script started from a shell: a test run under nohup hands SIGHUP down ignored, and halab
# (rightly) leaves an ignored signal alone, so SIGHUP would not end us.
signal.signal(signal.SIGHUP, signal.SIG_DFL)
signal.signal(signal.SIGTERM, signal.SIG_DFL)
from halab import Lab
faulthandler.register(signal.SIGUSR1)  # the test asks for our stack if we do not exit
mode = sys.argv[1]
def build(lab):
    br = lab.add_bridge("lan")
    a = lab.add_host("a")
    lab.connect(a, br, "eth0", "10.0.0.1/24")
    p = a.start(["sleep", "1000"])
    a.sh("setsid sleep 1000 </dev/null >/dev/null 2>&1 &", check=True)
    print(lab.id, p.pid, lab.workdir, flush=True)
if mode == "with":
    with Lab() as lab:
        build(lab)
        time.sleep(1000)
elif mode == "stubborn":
    with Lab(stop_timeout=3) as lab:
        lab.add_host("b").start(["sh", "-c", "trap '' TERM INT; sleep 1000"])
        build(lab)
        time.sleep(1000)
else:
    lab = Lab()
    build(lab)
    time.sleep(1000)
"""


def _spawn_creator(mode):
    proc = subprocess.Popen([sys.executable, "-c", _CREATOR, mode], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline().split()
    if not line:
        proc.kill()
        raise AssertionError(f"creator failed: {proc.communicate()[1]}")
    lab_id, pid, workdir = line[0], int(line[1]), line[2]
    return proc, lab_id, pid, workdir


def _lab_ns(lab_id):
    return [n for n in _ns.list_netns(lab_id + "-")]


def _lab_pids(lab_id):
    return [p for n in _lab_ns(lab_id) for p in _ns.ns_pids(n)]


def _force_clean(lab_id):
    subprocess.run([*HAPAIR_LAB, "clean", "--all", lab_id], cwd=REPO,
                   capture_output=True, timeout=60)


@pytest.mark.parametrize("sig,mode", [(signal.SIGINT, "with"), (signal.SIGTERM, "plain"),
                                      (signal.SIGHUP, "plain"), (signal.SIGINT, "stubborn")])
def test_teardown_on_signal(sig, mode):
    """Ctrl-C inside ``with Lab()`` and SIGTERM/SIGHUP to a plain script all
    tear the lab down (KeyboardInterrupt -> __exit__; signal handler).  A
    second Ctrl-C while tearing down is deferred until teardown is done."""
    proc, lab_id, pid, workdir = _spawn_creator(mode)
    try:
        pids = _lab_pids(lab_id)
        namespaces = _lab_ns(lab_id)
        assert pid in pids
        assert len(pids) == (4 if mode == "stubborn" else 2)  # stubborn: + sh, sleep
        assert len(namespaces) == (3 if mode == "stubborn" else 2)
        proc.send_signal(sig)
        if mode == "stubborn":
            time.sleep(1)  # teardown is now waiting for the TERM-ignoring process
            assert proc.poll() is None
            proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            # Say where it hangs (this is how a SIGHUP ignored by inheritance, under nohup, showed).
            proc.send_signal(signal.SIGUSR1)
            time.sleep(1)
            proc.kill()
            _, err = proc.communicate(timeout=10)
            raise AssertionError(f"the creator did not exit within 90 s of signal {sig}; its stack:\n{err}") from None
        assert proc.returncode == -sig, err
        _assert_gone(namespaces, pids, workdir)
    finally:
        proc.kill()
        proc.wait()
        _force_clean(lab_id)
        shutil.rmtree(workdir, ignore_errors=True)


def test_cli_list_and_clean_after_sigkill(lab):
    """A SIGKILLed creator cannot tear down: its daemon dies anyway (parent
    death signal), ``hapair-lab list`` shows the orphan and ``clean`` removes
    it, killing the stray process, but leaves live labs alone."""
    lab.add_host("mine")
    proc, lab_id, pid, workdir = _spawn_creator("plain")
    try:
        pids = _lab_pids(lab_id)
        assert len(pids) == 2
        proc.kill()
        proc.wait()
        wait_for(lambda: not _ns.pid_alive(pid), timeout=5, what="pdeathsig to kill the daemon")
        assert _lab_ns(lab_id), "namespaces should survive a SIGKILLed creator"

        out = subprocess.run([*HAPAIR_LAB, "list"], cwd=REPO, capture_output=True,
                             text=True, timeout=60, check=True).stdout
        row = [ln for ln in out.splitlines() if ln.startswith(lab_id + " ")]
        assert row and row[0].split()[2] == "no", out
        mine = [ln for ln in out.splitlines() if ln.startswith(lab.id + " ")]
        assert mine and mine[0].split()[2] == "yes", out

        dry = subprocess.run([*HAPAIR_LAB, "clean", "-n", lab.id, lab_id], cwd=REPO,
                             capture_output=True, text=True, timeout=60, check=True).stdout
        assert f"{lab.id}: creator pid {os.getpid()} is alive, skipped" in dry
        assert f"would remove {lab_id}-a" in dry
        assert _lab_ns(lab_id)

        cp = subprocess.run([*HAPAIR_LAB, "clean", lab.id, lab_id], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
        assert cp.returncode == 0, cp.stderr
        assert f"removed {lab_id}-a" in cp.stdout
        _assert_gone([lab_id + "-a", lab_id + "-sw"], pids)
        assert os.path.lexists(_ns.netns_path(f"{lab.id}-mine"))  # live lab untouched
        # The orphan's workdir (its logs) is only removed on request.
        assert os.path.isdir(workdir)
        cp = subprocess.run([*HAPAIR_LAB, "clean", "--workdirs", lab.id, lab_id], cwd=REPO,
                            capture_output=True, text=True, timeout=60, check=True)
        assert not os.path.exists(workdir), cp.stdout
        assert os.path.isdir(lab.workdir)
    finally:
        proc.kill()
        proc.wait()
        _force_clean(lab_id)
        shutil.rmtree(workdir, ignore_errors=True)


def test_require_root_and_netns_refuses_non_root():
    code = ("import halab, sys\n"
            "try:\n    halab.require_root_and_netns()\n"
            "except halab.LabError as e:\n    print('refused:', e); sys.exit(0)\n"
            "sys.exit(1)\n")
    cp = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                         sys.executable, "-c", code], cwd="/", capture_output=True,
                        text=True, timeout=60)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert "needs root" in cp.stdout


# --------------------------------------------------------------------------
# launcher safety


def test_launcher_refuses_foreign_and_fake_hosts(lab, monkeypatch):
    r1 = lab.add_host("r1")
    other = Lab()
    try:
        x = other.add_host("x")
        with pytest.raises(LabError, match="not a host of lab"):
            lab.start(x, ["sleep", "1"])
        with pytest.raises(LabError):
            lab.capture(x, "lo")
        with pytest.raises(LabError):
            lab.connect(x, lab.add_bridge("lan"), "eth0")
    finally:
        other.teardown()
    with pytest.raises(LabError):
        other.start(x, ["sleep", "1"])
    with pytest.raises(LabError):
        x.start(["sleep", "1"])

    fake = types.SimpleNamespace(name="r1", netns=r1.netns, lab=lab)
    with pytest.raises(LabError):
        lab.start(fake, ["sleep", "1"])
    with pytest.raises(LabError):
        lab.start(Host(lab, "r1", r1.netns), ["sleep", "1"])  # not the registered object
    with pytest.raises(LabError):
        lab.start(Host(lab, "root", "/proc/1/ns/net"), ["sleep", "1"])
    with pytest.raises(AttributeError):
        r1.netns = "somewhere-else"

    # If the lab's namespace were (somehow) the host's, the launcher refuses.
    real = _ns.host_netns_ids
    monkeypatch.setattr(_ns, "host_netns_ids", lambda: real() | {_ns.netns_id(r1.netns)})
    with pytest.raises(LabError, match="host network namespace"):
        r1.start(["sleep", "1"])
    monkeypatch.setattr(_ns, "host_netns_ids", real)
    assert lab.procs == []

    # Positive control: the process really runs in r1's namespace.
    p = r1.start(["sleep", "1000"])
    r1_ns = _ns.netns_id(r1.netns)

    def in_r1():
        st = os.stat(f"/proc/{p.pid}/ns/net")
        return (st.st_dev, st.st_ino) == r1_ns and _comm(p.pid) == "sleep"

    wait_for(in_r1, timeout=5, what="daemon in r1's namespace")
    assert p.terminate() == -signal.SIGTERM


# --------------------------------------------------------------------------
# processes


def test_proc_kill_kills_process_group(lab):
    r1 = lab.add_host("r1")
    p = r1.start(["sh", "-c", "sleep 100 & sleep 100"], name="sleepers")
    sleeps = wait_for(lambda: [q for q in p.group_pids() if _comm(q) == "sleep"]
                      if len([q for q in p.group_pids() if _comm(q) == "sleep"]) == 2 else None,
                      timeout=5, what="two sleeps")
    members = p.group_pids()
    assert p.alive()
    rc = p.kill()
    assert rc == -signal.SIGKILL
    for pid in set(members) | set(sleeps):
        assert not _ns.pid_alive(pid)
    assert p.group_pids() == [] and not p.alive()
    assert p.log_path == os.path.join(lab.workdir, "sleepers-r1.log")


def test_proc_terminate_escalates_and_signal(lab):
    r1 = lab.add_host("r1")
    # Ignores SIGTERM (inherited by the sleep): terminate must escalate.
    stubborn = r1.start(["sh", "-c", "trap '' TERM; sleep 100; sleep 100"], name="stubborn")
    wait_for(lambda: len(stubborn.group_pids()) >= 2, timeout=5, what="stubborn up")
    t0 = time.monotonic()
    assert stubborn.terminate(timeout=1) == -signal.SIGKILL
    assert time.monotonic() - t0 >= 0.9
    assert stubborn.group_pids() == []

    script = 'trap "echo got-usr1" USR1; echo ready; while :; do sleep 0.1; done'
    p = r1.start(["sh", "-c", script], name="sig", log="custom/sig.log")
    assert p.log_path == os.path.join(lab.workdir, "custom", "sig.log")
    wait_for(lambda: "ready" in p.read_log(), timeout=5, what="ready")
    p.signal(signal.SIGUSR1)
    wait_for(lambda: "got-usr1" in p.read_log(), timeout=5, what="USR1 handled")
    assert p.alive()
    assert p.terminate() == -signal.SIGTERM
    with pytest.raises(subprocess.TimeoutExpired):
        r1.start(["sleep", "5"]).wait(timeout=0.2)

    # A restart appends to the log; read_log() returns only the new run.
    q1 = r1.start(["echo", "first"], name="echo")
    assert q1.wait(5) == 0
    q2 = r1.start(["echo", "second"], name="echo")
    assert q2.wait(5) == 0
    assert q1.log_path == q2.log_path
    assert q2.read_log() == "second\n"
    assert "first" in q1.read_log()


def test_start_finds_venv_console_scripts(lab):
    r1 = lab.add_host("r1")
    cp = r1.run(["sh", "-c", "command -v python"], check=True)
    assert cp.stdout.strip() == os.path.join(os.path.dirname(sys.executable), "python")
    p = r1.start(["sh", "-c", "echo $FOO"], env={"FOO": "bar"})
    p.wait(5)
    assert p.read_log() == "bar\n"


# --------------------------------------------------------------------------
# captures


def _tshark_fields(path, display_filter, *fields):
    argv = ["tshark", "-n", "-r", path, "-Y", display_filter, "-T", "fields"]
    for f in fields:
        argv += ["-e", f]
    cp = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    return [ln.split("\t") for ln in cp.stdout.splitlines() if ln.strip()]


def test_capture_writes_readable_pcap(lab):
    br, r1, r2 = _pair_on_bridge(lab)
    cap_host = lab.capture(r1, "eth0", "r1.pcap", bpf="icmp")
    cap_port = lab.capture(br, "r2-eth0", "port.pcap", bpf="icmp or arp")
    cap_br = lab.capture(br, None, "bridge.pcap", bpf="arp")
    assert cap_host.path == os.path.join(lab.workdir, "r1.pcap")
    r1.run(["ip", "neigh", "flush", "all"])
    assert r1.ping("10.0.0.3", count=3)
    assert cap_host.stop() == 6
    cap_port.stop()
    cap_br.stop()
    assert cap_host.stats["captured"] == 6
    assert os.path.getsize(cap_host.path) > 24  # more than the pcap header

    types_ = _tshark_fields(cap_host.path, "icmp", "ip.src", "ip.dst", "icmp.type")
    assert sorted(t[2] for t in types_) == ["0", "0", "0", "8", "8", "8"]
    assert ["10.0.0.2", "10.0.0.3", "8"] in types_
    assert cap_host.count() == 6 and cap_host.count("icmp[icmptype] == icmp-echo") == 3
    assert cap_port.count("icmp") == 6
    assert cap_br.count("arp") >= 1  # the broadcast ARP request is flooded to the bridge
    cap_host.stop()  # idempotent


def test_capture_refuses_bad_interface(lab):
    r1 = lab.add_host("r1")
    with pytest.raises(LabError, match="did not start"):
        lab.capture(r1, "nosuch0", "x.pcap")


# --------------------------------------------------------------------------
# interop with a real third-party VRRP daemon


@pytest.mark.interop
@pytest.mark.skipif(shutil.which("keepalived") is None, reason="keepalived not installed")
def test_keepalived_election_and_failover(lab):
    """Two keepalived (prio 200 / 100, vrid 51) on one bridge: the VIP is on
    the master only; SIGKILLing the master's process group (a crash: the
    parent and its VRRP child die without cleanup) makes the backup take it.
    """
    vip = "10.0.0.100"
    br, r1, r2 = _pair_on_bridge(lab)
    cap = lab.capture(br, "r1-eth0", "vrrp.pcap", bpf="vrrp")

    def conf(prio, rid):
        return keepalived_vrrp_conf(iface="eth0", vrid=51, priority=prio,
                                    vips=[f"{vip}/24"], advert_int=1, router_id=rid)

    k1 = start_keepalived(r1, conf(200, "r1"))
    k2 = start_keepalived(r2, conf(100, "r2"))
    assert k1.log_path == os.path.join(lab.workdir, "keepalived-r1.log")
    assert os.path.exists(os.path.join(lab.workdir, "keepalived-r1.conf"))

    wait_for(lambda: r1.has_addr("eth0", vip), timeout=20, what="r1 to become master")
    # Stable: the backup never takes the VIP while the master is alive.
    end = time.monotonic() + 3
    while time.monotonic() < end:
        assert r1.has_addr("eth0", vip)
        assert not r2.has_addr("eth0", vip), "VIP on both routers"
        time.sleep(0.2)
    assert r2.ping(vip)
    assert r2.neigh(vip, dev="eth0")[0] == r1.link_mac("eth0")
    wait_for(lambda: len(k1.group_pids()) == 2, timeout=5, what="keepalived parent + VRRP child")
    members = k1.group_pids()

    assert k1.kill() == -signal.SIGKILL
    assert not any(_ns.pid_alive(p) for p in members)
    t0 = time.monotonic()
    wait_for(lambda: r2.has_addr("eth0", vip), timeout=15, what="r2 to take over the VIP")
    assert time.monotonic() - t0 < 10
    # (r1 still has the VIP configured: a crashed keepalived does not clean
    # up.  It cannot answer for it any more, which is what a crash means.)
    assert k2.alive()
    assert "Entering MASTER STATE" in k1.read_log()
    assert "Entering MASTER STATE" in k2.read_log()

    time.sleep(1.5)  # let r2 send adverts as master
    cap.stop()
    adverts = _tshark_fields(cap.path, "vrrp", "ip.src", "ip.dst", "vrrp.virt_rtr_id",
                             "vrrp.prio", "vrrp.version")
    senders = {(src, prio) for src, dst, vrid, prio, ver in adverts}
    assert ("10.0.0.2", "200") in senders and ("10.0.0.3", "100") in senders
    assert all(dst == "224.0.0.18" and vrid == "51" and ver == "2"
               for src, dst, vrid, prio, ver in adverts)
    assert k2.terminate() == 0
