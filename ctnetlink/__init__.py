"""Conntrack over netlink, shared by vrrpd and ctsync: a struct codec (:mod:`.codec`),
the identity key of an entry (:mod:`.key`), a trio socket adapter (:mod:`.socket`), the
conntrack-events sysctl (:mod:`.sysctl`), running setup code inside another network
namespace (:mod:`.netns`), and deleting the entries NATed to an address (:mod:`.flush`).
It knows nothing of the sync protocol or of VRRP."""
