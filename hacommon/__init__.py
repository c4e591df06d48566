"""Code vrrpd and ctsync share, under both daemons: the config checker, the Unix control
socket (server and client), the vrrpd <-> ctsync hand-shake as typed messages, logging,
the daemons' command line, and the socket constants Python lacks. It imports neither
daemon (see docs/architecture.md and the import contracts in pyproject.toml)."""
