"""User-mode (rootless) networking for vmkit guests: packet codecs and the NAT stack."""
