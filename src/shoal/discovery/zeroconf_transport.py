"""The mDNS sockets, through the ``zeroconf`` library: the one module that imports it.

zeroconf runs on the node's own event loop (it attaches to the running loop), through its async
API only: nothing here blocks the loop. Its exceptions become ``TransportError`` here, at the
boundary. Its log lines about network errors (an interface taken down: "Network is
unreachable") keep their message but lose the traceback, which says nothing to a user.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from zeroconf import Error as ZeroconfError
from zeroconf import ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from shoal.discovery.announce import MAX_ANNOUNCED_ADDRESSES, SERVICE_TYPE, ServiceRecord
from shoal.discovery.mdns import ChangeCallback
from shoal.errors import TransportError

__all__ = ["ZeroconfTransport"]


class _NetworkErrorsWithoutTraceback(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], OSError):
            record.exc_info = None
            record.exc_text = None
        return True


_ZEROCONF_LOG = logging.getLogger("zeroconf")
if not any(isinstance(f, _NetworkErrorsWithoutTraceback) for f in _ZEROCONF_LOG.filters):
    _ZEROCONF_LOG.addFilter(_NetworkErrorsWithoutTraceback())


class ZeroconfTransport:
    """mDNS on the interfaces with the IP addresses ``interfaces`` (opened now).

    Raises:
        TransportError: The sockets cannot be opened (no multicast, port 5353 held by a
            responder that shares it with nobody).
    """

    def __init__(self, interfaces: Sequence[str]) -> None:
        try:
            self._zc = AsyncZeroconf(interfaces=list(interfaces))
        except (OSError, RuntimeError, ValueError, ZeroconfError) as exc:
            raise TransportError(
                f"cannot open mDNS sockets on {', '.join(interfaces)}: {exc}"
            ) from exc
        self._browser: AsyncServiceBrowser | None = None

    async def start(self, on_change: ChangeCallback) -> None:
        def handler(
            zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
        ) -> None:
            on_change(name, state_change is not ServiceStateChange.Removed)

        try:
            self._browser = AsyncServiceBrowser(
                self._zc.zeroconf, [SERVICE_TYPE], handlers=[handler]
            )
        except (OSError, RuntimeError, ZeroconfError) as exc:
            raise TransportError(f"cannot browse for {SERVICE_TYPE}: {exc}") from exc

    async def announce(self, record: ServiceRecord) -> None:
        info = AsyncServiceInfo(
            SERVICE_TYPE,
            record.name,
            port=record.port,
            properties=dict(record.properties),
            server=record.server,
            parsed_addresses=list(record.addresses),
        )
        try:
            announced = await self._zc.async_register_service(info)
            await announced
        except (OSError, RuntimeError, ZeroconfError) as exc:
            raise TransportError(f"cannot announce {record.name}: {exc}") from exc

    async def resolve(self, name: str, *, timeout: float) -> ServiceRecord | None:
        try:
            info = AsyncServiceInfo(SERVICE_TYPE, name)
            if not await info.async_request(self._zc.zeroconf, timeout * 1000):
                return None
            addresses = info.parsed_addresses()
        except (OSError, RuntimeError, ValueError, ZeroconfError) as exc:
            raise TransportError(f"cannot resolve an mDNS name: {exc}") from exc
        return ServiceRecord(
            name=name,
            port=info.port or 0,
            # Enough to find the few we use among addresses we refuse.
            addresses=tuple(addresses[: 4 * MAX_ANNOUNCED_ADDRESSES]),
            properties=dict(info.properties),
        )

    async def aclose(self) -> None:
        try:
            if self._browser is not None:
                await self._browser.async_cancel()
            await self._zc.async_close()
        except (OSError, RuntimeError, ZeroconfError) as exc:
            raise TransportError(f"closing mDNS: {exc}") from exc
