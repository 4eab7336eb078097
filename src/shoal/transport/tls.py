"""TLS 1.3 contexts.

Both sides refuse anything older than TLS 1.3. The dialer does not verify the certificate
chain (there is none: certificates are self-signed); it reads the listener's certificate and
checks its key against the node ID, and the handshake inside the channel binds that
certificate (see ``shoal.protocol.handshake``).
"""

from __future__ import annotations

import ssl
from pathlib import Path


def server_context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(str(cert_path), str(key_path))
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def client_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    # Authentication is by node key (checked after the TLS handshake), not by a CA chain.
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx
