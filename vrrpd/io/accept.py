"""Accept_Mode off (RFC 5798 §6.1): a master that does not own its virtual addresses
forwards through them but does not accept packets addressed to them.

vrrpd keeps one nftables table, ``inet vrrpd_accept``, whose input chain drops what is
delivered locally to the virtual addresses of the instances with Accept_Mode off, except
IPv6 Neighbour Discovery (RFC 5798 §6.4.3: a master still answers Neighbour Solicitations
for them). Whether an instance accepts never changes while it runs, and a backup holds
no virtual address (so nothing addressed to one is delivered to it), so the sets hold
those addresses all the time: a transition costs no nft call. Forwarding is untouched
(input hook only). The table is rebuilt whole at start and reload, and deleted on exit;
``nft`` does it (one short command, in a worker thread).
"""

from __future__ import annotations

import ipaddress
import logging
import shutil
import subprocess

log = logging.getLogger("vrrpd")

TABLE = "vrrpd_accept"


def ruleset(v4: list[ipaddress.IPv4Address], v6: list[ipaddress.IPv6Address]) -> str:
    """The whole table as an ``nft -f`` script that replaces any previous one."""
    def elements(addrs) -> str:
        return f"elements = {{ {', '.join(map(str, sorted(set(addrs))))} }}" if addrs else ""

    return f"""\
table inet {TABLE}
delete table inet {TABLE}
table inet {TABLE} {{
    set no_accept_v4 {{ type ipv4_addr; {elements(v4)} }}
    set no_accept_v6 {{ type ipv6_addr; {elements(v6)} }}
    chain input {{
        type filter hook input priority filter - 10; policy accept;
        ip daddr @no_accept_v4 drop
        icmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert }} accept
        ip6 daddr @no_accept_v6 drop
    }}
}}
"""


def _nft(script: str) -> str | None:
    """Run an nft script; None, or what went wrong."""
    exe = shutil.which("nft")
    if exe is None:
        return "nft is not installed (apt-get install nftables)"
    try:
        cp = subprocess.run([exe, "-f", "-"], input=script, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as e:
        return str(e)
    return None if cp.returncode == 0 else (cp.stderr.strip() or f"exit status {cp.returncode}")


def install(addresses: list) -> str | None:
    """Drop local delivery to `addresses` (IPv4 and IPv6 mixed); with none, remove the
    table. Returns None or the problem (logged by the caller)."""
    if not addresses:
        return remove()
    v4 = [a for a in addresses if a.version == 4]
    v6 = [a for a in addresses if a.version == 6]
    return _nft(ruleset(v4, v6))


def remove() -> str | None:
    if shutil.which("nft") is None:
        return None  # nothing can have been installed
    return _nft(f"table inet {TABLE}\ndelete table inet {TABLE}\n")
