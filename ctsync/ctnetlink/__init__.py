"""ctnetlink for ctsync: a struct codec (:mod:`.codec`), a trio socket
adapter (:mod:`.socket`), the conntrack-events sysctl (:mod:`.sysctl`) and
running setup code inside another network namespace (:mod:`.netns`)."""
