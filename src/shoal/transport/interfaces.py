"""This host's interface addresses, for a node that listens on every interface (``0.0.0.0``).

The only place that asks the operating system (through psutil, which works alike on Linux,
macOS, the BSDs and Windows); :func:`shoal.transport.addresses.advertised_addresses` decides,
without I/O, which of them a node tells its peers.
"""

from __future__ import annotations

import logging
import socket

import psutil

__all__ = ["interface_addresses"]

log = logging.getLogger(__name__)


def interface_addresses() -> list[str]:
    """The IPv4 and IPv6 addresses of this host's interfaces that are up, in the system's order.

    IPv6 link-local addresses keep their zone (``fe80::1%eth0``). An interface whose state
    cannot be read counts as up. If the system cannot be asked at all, the answer is empty
    (with one warning): the node then tells peers no address, and ``--advertise`` is the way
    out.
    """
    try:
        addresses = psutil.net_if_addrs()
        stats = psutil.net_if_stats()
    except (OSError, psutil.Error) as exc:
        log.warning("cannot list this host's network interfaces: %s", exc)
        return []
    result: list[str] = []
    for name, entries in addresses.items():
        stat = stats.get(name)
        if stat is not None and not stat.isup:
            continue
        result.extend(
            entry.address
            for entry in entries
            if entry.family in (socket.AF_INET, socket.AF_INET6) and entry.address
        )
    return result
