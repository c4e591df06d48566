"""The demo runs the example files configs/r1.toml and r2.toml in the lab: the lab's
topology (halab.hapair) and the files must describe the same boxes, and the mapping
must change nothing but the sockets, the sync interface's name and the options."""

from __future__ import annotations

import tomllib

import pytest

from halab.boxconfig import lab_box_config
from halab.hapair import LAN_VIP, ROUTER_ADDRS, SYNC_ADDRS, SYNC_GROUP, WAN_VIP


@pytest.mark.parametrize("router", ["r1", "r2"])
def test_the_example_files_describe_the_lab_routers(router, tmp_path):
    cfg, changes = lab_box_config(router, tmp_path)
    v, c = cfg["vrrpd"], cfg["ctsync"]
    assert v["instance"]["WAN"]["virtual_addresses"] == [f"{WAN_VIP}/24"]
    assert v["instance"]["LAN"]["virtual_addresses"] == [f"{LAN_VIP}/24"]
    for inst in v["instance"].values():
        assert inst["interface"] in ROUTER_ADDRS[router]
        for t in inst.get("track_interfaces", []):
            assert t["interface"] in ROUTER_ADDRS[router]
    assert v["sync_group"][SYNC_GROUP]["instances"] == ["WAN", "LAN"]
    assert c["sync_interface"] in ROUTER_ADDRS[router]
    assert c["local_address"] == SYNC_ADDRS[router]
    assert c["peer_address"] == SYNC_ADDRS["r2" if router == "r1" else "r1"]
    assert c["failover"]["vrrp_sync_group"] == SYNC_GROUP
    # ctsync's own addresses are not replicated
    own = {a.split("/")[0] for a in ROUTER_ADDRS[router].values()}
    assert {f"{a}/32" for a in own if not a.startswith("172.16.")} <= set(c["ignore_addresses"])
    assert v["control_socket"].startswith(str(tmp_path)) and c["control_socket"].startswith(str(tmp_path))
    assert len(changes) == 3


def test_the_mapping_changes_only_what_it_says(tmp_path):
    from halab.boxconfig import example_path

    orig = tomllib.loads(example_path("r2").read_text())
    cfg, changes = lab_box_config("r2", tmp_path, advert_interval=2, mode="inject")
    assert any("advert_interval 1 -> 2" in ch for ch in changes)
    assert "ctsync.mode commit -> inject" in changes
    for name in ("WAN", "LAN"):
        o, m = orig["vrrpd"]["instance"][name], cfg["vrrpd"]["instance"][name]
        assert {k: v for k, v in m.items() if k != "advert_interval"} == \
               {k: v for k, v in o.items() if k != "advert_interval"}
    keep = {k for k in orig["ctsync"] if k not in ("control_socket", "sync_interface", "mode")}
    assert {k: cfg["ctsync"][k] for k in keep} == {k: orig["ctsync"][k] for k in keep}


def test_the_demo_can_run_the_boxes_as_vrrpv3_with_fast_adverts(tmp_path):
    """./run demo --vrrp-version 3 --advert-interval 0.05: every instance mapped, each change
    listed, and the result is a valid vrrpd configuration."""
    from vrrpd import config as C
    cfg, changes = lab_box_config("r1", tmp_path, advert_interval=0.05, version=3)
    for name, inst in cfg["vrrpd"]["instance"].items():
        assert inst["version"] == 3 and inst["advert_interval"] == 0.05
        assert f"vrrpd.instance.{name}.version 2 -> 3" in changes
        assert f"vrrpd.instance.{name}.advert_interval 1 -> 0.05" in changes
    from halab.vrrp import toml_dump
    path = tmp_path / "r1.toml"
    path.write_text(toml_dump(cfg))
    loaded = C.load(path)
    assert {i.version for i in loaded.instances.values()} == {3}
