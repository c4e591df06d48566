"""hapair-import: keepalived (+ conntrackd) and Vyatta/VyOS configurations -> a box file.

One module per source format (keepalived_syntax.py reads keepalived's language,
keepalived.py maps it; conntrackd.py; vyatta.py), one for what they share
(scripts.py: notify commands and health checks), the output model and its TOML
writer (box.py, tomlout.py), and target.py: what the product accepts, checked
against vrrpd.config.parse / ctsync.config.parse. This package sits above the
product (like halab): it imports vrrpd/ctsync config modules, never the reverse.

Every construct of the input is either translated or listed, with file:line and
why, in the comment block at the top of the output: nothing is dropped silently.
"""

from .box import Conversion, Finding, InputError

__all__ = ["Conversion", "Finding", "InputError"]
