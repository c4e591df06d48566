"""Where the daemons of one box meet by default: their control sockets (ctsync finds
vrrpd's through the [vrrpd] table of the same file, or this default)."""

RUN_DIR = "/run/hapair"
VRRPD_CONTROL_SOCKET = f"{RUN_DIR}/vrrpd.sock"
CTSYNC_CONTROL_SOCKET = f"{RUN_DIR}/ctsync.sock"
