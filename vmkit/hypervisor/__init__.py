"""vmkitd: the daemon, its workers, the REST API (docs/hypervisor.md)."""
