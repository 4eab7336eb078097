"""Discovery of nodes outside the peer protocol: mDNS on the local network."""

from shoal.discovery.announce import SERVICE_TYPE, MdnsPlan, plan_mdns
from shoal.discovery.mdns import MdnsDiscovery

__all__ = ["SERVICE_TYPE", "MdnsDiscovery", "MdnsPlan", "plan_mdns"]
