"""Return traffic by the arrival link: the nftables half (the policy rules are in uplinkd).

A connection that *arrives* on an uplink (a port forward to a LAN server, or a service
on the router) must be answered through that same uplink: its source address belongs
to that provider, and the other provider drops it (BCP 38 ingress filtering) or the
client ignores it. The main table's default route knows only the active uplink, so:

* a new connection arriving on uplink N gets connmark N (in the bits of `mark_mask`), and so
  does a new connection *leaving* by uplink N (from the LAN or the router), which keeps an
  outgoing flow on the uplink it started on: when the preferred uplink comes back, a flow
  that is NATed to the backup's address must not be routed out through the preferred one
  (whose provider drops that source);
* packets of a marked connection that do not arrive on an uplink (the replies, from
  the LAN) and the router's own replies get the connmark copied into their packet mark;
* `ip rule fwmark N lookup TABLE_N` (after `lookup main suppress_prefixlength 0`, so
  only the *default* route comes from the uplink's table) sends them out by uplink N.

The connmark is part of the conntrack entry, so ctsync replicates it (CTA_MARK) and the
other router of a pair routes the replies of a taken-over connection the same way.
"""

from __future__ import annotations

TABLE = "hapair_uplinks"


def nft_table_name() -> str:
    return TABLE


def nft_ruleset(cfg) -> str:
    """The whole table as an `nft -f` script (replaces a leftover of an earlier run)."""
    mask = cfg.mark_mask
    keep = 0xFFFFFFFF & ~mask
    uplink_ifs = ", ".join(f'"{u.interface}"' for u in cfg.links.values())
    mark_new = "\n".join(
        f'        ct state new iifname "{u.interface}" ct mark set ct mark and {keep:#x} or {u.mark:#x}'
        for u in cfg.links.values()
    )
    mark_out = "\n".join(
        f'        ct state new oifname "{u.interface}" ct mark and {mask:#x} == 0 ct mark set ct mark and {keep:#x} or {u.mark:#x}'
        for u in cfg.links.values()
    )
    if cfg.lan_interfaces:
        from_lan = f"iifname {{ {', '.join(chr(34) + i + chr(34) for i in cfg.lan_interfaces)} }}"
    else:
        from_lan = f"iifname != {{ {uplink_ifs} }}"
    return f"""\
table inet {TABLE}
delete table inet {TABLE}
table inet {TABLE} {{
    chain prerouting {{
        type filter hook prerouting priority mangle; policy accept;
{mark_new}
        {from_lan} ct mark and {mask:#x} != 0 meta mark set ct mark and {mask:#x}
    }}
    chain output {{
        type route hook output priority mangle; policy accept;
        ct mark and {mask:#x} != 0 meta mark set ct mark and {mask:#x}
    }}
    chain postrouting {{
        type filter hook postrouting priority mangle; policy accept;
{mark_out}
    }}
}}
"""
