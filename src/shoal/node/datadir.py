"""A node's data dir: layout, first-time setup and configuration.

Layout (see docs/content-format.md)::

    <data dir>/
      node.key          Ed25519 private key, PKCS#8 PEM, mode 0600
      node.crt          self-signed certificate for node.key, rewritten on every start
      convergence.key   32-byte convergence secret as hex, mode 0600 (share it to dedupe as a group)
      network.key       32-byte network secret as hex, mode 0600: the node is in that closed
                        network (absent: the open network; see shoal.node.network)
      config.toml       listen address, bootstrap peers, replicas, network name, storage limits,
                        transport limits ([limits]), DHT settings ([dht]; docs/configuration.md)
      shoal.db          SQLite catalog (WAL): names, pins, peers
      blocks/           one file per block: blocks/<2>/<2>/<block id>; tmp/, corrupt/
      node.lock         held (flock) by the running node; holds its pid (see docs/storage.md)
      api.json          address and token of the running node's local HTTP API (while running)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import secrets
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from shoal import defaults
from shoal.content.manifest import Redundancy
from shoal.dht.routing import DhtOptions
from shoal.errors import ConfigError
from shoal.node.network import Invite, NetworkMembership
from shoal.protocol.messages import MAX_NODES
from shoal.store.files import write_file_atomic
from shoal.transport.identity import Identity
from shoal.transport.limits import limits_with
from shoal.units import parse_size

KEY_FILE = "node.key"
SECRET_FILE = "convergence.key"
NETWORK_FILE = "network.key"
CONFIG_FILE = "config.toml"
CATALOG_FILE = "shoal.db"
BLOCKS_DIR = "blocks"


@dataclass
class NodeConfig:
    """Settings from config.toml, overridable by command-line flags and API arguments."""

    listen: str = defaults.LISTEN
    peers: list[str] = field(default_factory=list)
    replicas: int = defaults.REPLICAS
    #: Erasure coding for new files by default (``node.erasure = "3-of-5"``): ``(k, n)``;
    #: None: ``replicas`` copies (``docs/erasure.md``).
    erasure: tuple[int, int] | None = None
    network: str = defaults.OPEN_NETWORK
    #: Most bytes of blocks the node keeps (``node.max_storage``); None: no limit but the
    #: reserve.
    max_storage: int | None = None
    #: Free disk the node never uses (``node.reserved_space``); None: 5% of the file system,
    #: at most 1 GiB.
    reserved_space: int | None = None
    #: Addresses peers should use to reach this node (``node.advertise``); empty: the listen
    #: address, or the host's interface addresses when listening on a wildcard address.
    advertise: list[str] = field(default_factory=list)
    #: Find nodes on the local network and announce this one (``node.mdns``).
    mdns: bool = True
    #: Seconds a node must be unreachable before its copies count as lost
    #: (``node.repair_delay``; ``docs/repair.md``).
    repair_delay: float = defaults.REPAIR_DELAY
    #: Seconds a block with no live lease is kept before GC frees it (``node.gc_grace``);
    #: None: the default (24 hours).
    gc_grace: float | None = None
    #: Transport limits changed from their defaults (the ``[limits]`` table; names as in
    #: ``shoal.transport.TransportLimits``).
    limits: dict[str, int | float] = field(default_factory=dict)
    #: DHT settings changed from their defaults (the ``[dht]`` table; names as in
    #: :data:`DHT_SETTINGS`, checked by :func:`check_dht_settings`).
    dht: dict[str, int | float] = field(default_factory=dict)

    def to_toml(self) -> str:
        peers = ", ".join(f'"{p}"' for p in self.peers)
        text = (
            "# Shoal node configuration. Command-line flags override these values.\n"
            "[node]\n"
            f'listen = "{self.listen}"\n'
            f"peers = [{peers}]\n"
            f"replicas = {self.replicas}\n"
            f'network = "{self.network}"\n'
        )
        if self.erasure is not None:
            text += f'erasure = "{self.erasure[0]}-of-{self.erasure[1]}"\n'
        if self.max_storage is not None:
            text += f"max_storage = {_size_toml(self.max_storage)}\n"
        if self.reserved_space is not None:
            text += f"reserved_space = {_size_toml(self.reserved_space)}\n"
        if self.advertise:
            text += f"advertise = [{', '.join(json.dumps(a) for a in self.advertise)}]\n"
        if not self.mdns:
            text += "mdns = false\n"
        if self.repair_delay != defaults.REPAIR_DELAY:
            text += f"repair_delay = {self.repair_delay!r}\n"
        if self.gc_grace is not None:
            text += f"gc_grace = {self.gc_grace!r}\n"
        if self.limits:
            text += "\n[limits]\n" + "".join(f"{k} = {v!r}\n" for k, v in self.limits.items())
        if self.dht:
            text += "\n[dht]\n" + "".join(f"{k} = {v!r}\n" for k, v in self.dht.items())
        return text

    @classmethod
    def from_mapping(cls, data: dict[str, Any], source: Path) -> NodeConfig:
        node = data.get("node", {})
        if not isinstance(node, dict):
            raise ConfigError(f"{source}: [node] must be a table")
        config = cls()
        listen = node.get("listen", config.listen)
        peers = node.get("peers", config.peers)
        replicas = node.get("replicas", config.replicas)
        network = node.get("network", config.network)
        if not isinstance(listen, str):
            raise ConfigError(f"{source}: node.listen must be a string like 127.0.0.1:3000")
        if not isinstance(peers, list) or not all(isinstance(p, str) for p in peers):
            raise ConfigError(f"{source}: node.peers must be a list of HOST:PORT strings")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or not 1 <= replicas <= 16:
            raise ConfigError(f"{source}: node.replicas must be an integer from 1 to 16")
        if not isinstance(network, str) or not 0 < len(network) <= 64:
            raise ConfigError(f"{source}: node.network must be a name of 1 to 64 characters")
        advertise = node.get("advertise", [])
        if not isinstance(advertise, list) or not all(isinstance(a, str) for a in advertise):
            raise ConfigError(f"{source}: node.advertise must be a list of HOST:PORT strings")
        mdns = node.get("mdns", True)
        if not isinstance(mdns, bool):
            raise ConfigError(f"{source}: node.mdns must be true or false")
        repair_delay = node.get("repair_delay", defaults.REPAIR_DELAY)
        if (
            not isinstance(repair_delay, int | float)
            or isinstance(repair_delay, bool)
            or (repair_delay < 0)
        ):
            raise ConfigError(f"{source}: node.repair_delay must be a number of seconds (>= 0)")
        gc_grace = node.get("gc_grace")
        if gc_grace is not None and (
            not isinstance(gc_grace, int | float) or isinstance(gc_grace, bool) or gc_grace < 0
        ):
            raise ConfigError(f"{source}: node.gc_grace must be a number of seconds, 0 or more")
        erasure = node.get("erasure")
        if erasure is not None and not isinstance(erasure, str):
            raise ConfigError(f'{source}: node.erasure must be a string like "3-of-5"')
        limits = data.get("limits", {})
        if not isinstance(limits, dict):
            raise ConfigError(f"{source}: [limits] must be a table")
        checked = limits_with(limits, source=f"{source} [limits]")
        dht = data.get("dht", {})
        if not isinstance(dht, dict):
            raise ConfigError(f"{source}: [dht] must be a table")
        return cls(
            listen=listen,
            peers=list(peers),
            replicas=replicas,
            erasure=None if erasure is None else parse_erasure(erasure, f"{source}: node.erasure"),
            network=network,
            max_storage=_size_setting(node, "max_storage", source),
            reserved_space=_size_setting(node, "reserved_space", source),
            advertise=list(advertise),
            mdns=mdns,
            repair_delay=float(repair_delay),
            gc_grace=None if gc_grace is None else float(gc_grace),
            limits={name: getattr(checked, name) for name in limits},
            dht=check_dht_settings(dht, source=str(source)),
        )


@dataclass(frozen=True)
class DhtSetting:
    """One key of config.toml's ``[dht]`` table: a :class:`DhtOptions` field a user may set."""

    integer: bool
    #: The least value allowed, and whether the value must be above it (not equal).
    least: float
    above: bool = False
    #: The greatest value allowed (None: no bound).
    most: float | None = None
    #: What a number counts, for error messages ("seconds").
    unit: str = ""

    def describe(self) -> str:
        """What the setting must be, for error messages ("an integer from 1 to 24")."""
        kind = "an integer" if self.integer else "a number"
        if self.unit:
            kind += f" of {self.unit}"
        if self.most is not None:
            return f"{kind} from {self.least:g} to {self.most:g}"
        if self.above:
            return f"{kind} above {self.least:g}"
        return f"{kind}, {self.least:g} or more"


#: The keys of config.toml's ``[dht]`` table (``docs/configuration.md``, ``docs/dht.md``).
DHT_SETTINGS: Final[dict[str, DhtSetting]] = {
    "k": DhtSetting(integer=True, least=1, most=MAX_NODES),
    "alpha": DhtSetting(integer=True, least=1),
    "refresh_interval": DhtSetting(integer=False, least=0, above=True, unit="seconds"),
    "query_timeout": DhtSetting(integer=False, least=0, above=True, unit="seconds"),
    "lookup_timeout": DhtSetting(integer=False, least=0, above=True, unit="seconds"),
    "cache_ttl": DhtSetting(integer=False, least=0, unit="seconds"),
    "max_per_subnet": DhtSetting(integer=True, least=1),
    "find_node_rate": DhtSetting(integer=False, least=0, above=True, unit="requests per second"),
    "find_node_burst": DhtSetting(integer=True, least=1),
}


def check_dht_settings(settings: dict[str, Any], *, source: str) -> dict[str, int | float]:
    """DHT settings by name (config.toml's ``[dht]`` table), checked.

    Args:
        settings: the table; every name must be a key of :data:`DHT_SETTINGS`.
        source: where the table is (the config file), named by error messages.

    Returns:
        The settings, integers as ``int`` and the others as ``float``.

    Raises:
        ConfigError: An unknown name, or a value of the wrong type (a boolean is not an
            integer) or out of range; the message names ``source``, the key and what it must be.
    """
    checked: dict[str, int | float] = {}
    for name, value in settings.items():
        setting = DHT_SETTINGS.get(name)
        if setting is None:
            raise ConfigError(
                f"{source}: unknown key {name[:40]!r} in [dht]; known keys: "
                f"{', '.join(DHT_SETTINGS)}"
            )
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or (setting.integer and not isinstance(value, int))
            or not math.isfinite(value)
            or value < setting.least
            or (setting.above and value <= setting.least)
            or (setting.most is not None and value > setting.most)
        ):
            raise ConfigError(f"{source}: dht.{name} must be {setting.describe()}")
        checked[name] = value if setting.integer else float(value)
    return checked


def dht_options_with(settings: dict[str, int | float], *, base: DhtOptions) -> DhtOptions:
    """``base`` with the settings (checked by :func:`check_dht_settings`) changed."""
    try:
        return dataclasses.replace(base, **settings)  # type: ignore[arg-type]
    except ValueError as exc:  # DhtOptions' own checks, which the table above mirrors
        raise ConfigError(f"DHT settings: {exc}") from None


_SIZE_UNITS = (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10))


def _size_toml(size: int) -> str:
    """A size as TOML that reads back exactly: ``"50GiB"`` when a unit divides it, else bytes."""
    for unit, factor in _SIZE_UNITS:
        if size and size % factor == 0:
            return f'"{size // factor}{unit}"'
    return str(size)


def _size_setting(node: dict[str, Any], key: str, source: Path) -> int | None:
    """``node.<key>`` as bytes (a size such as "50GiB" or an integer), or None if absent."""
    if key not in node:
        return None
    value = node[key]
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise ConfigError(
            f'{source}: node.{key} must be a number of bytes or a size such as "50GiB"'
        )
    return parse_size(value, what=f"node.{key} in {source}")


@dataclass(frozen=True)
class DataDir:
    """An initialized data dir, loaded."""

    path: Path
    identity: Identity
    convergence_secret: bytes
    config: NodeConfig
    network: NetworkMembership

    @property
    def blocks_path(self) -> Path:
        return self.path / BLOCKS_DIR

    @property
    def catalog_path(self) -> Path:
        return self.path / CATALOG_FILE


def is_initialized(path: Path) -> bool:
    return (path / KEY_FILE).is_file()


def init_data_dir(
    path: Path,
    config: NodeConfig | None = None,
    *,
    join: Invite | None = None,
    open_network: bool = False,
) -> tuple[DataDir, bool]:
    """Create the data dir if needed; return it loaded and whether it was created now.

    A new data dir starts a new closed network (a fresh network secret) unless ``join`` gives
    the secret of an existing one (and its addresses become bootstrap peers) or
    ``open_network`` puts it in the open network. An existing data dir is loaded as it is,
    except that ``join`` moves it into the invite's network.

    Raises:
        ConfigError: The path is not usable, or ``open_network`` is asked of a data dir that is
            already in a closed network.
    """
    if join is not None and open_network:
        raise ConfigError("choose one: join a network with an invite, or the open network")
    if path.exists() and not path.is_dir():
        raise ConfigError(f"data dir {path} exists and is not a directory")
    if is_initialized(path):
        if join is not None:
            join_network(path, join)
        elif open_network and (path / NETWORK_FILE).exists():
            raise ConfigError(
                f"data dir {path} is already in a closed network; remove {NETWORK_FILE} from it "
                "to move it to the open network"
            )
        return load_data_dir(path), False
    config = config or NodeConfig()
    if join is not None:
        config.peers = list(dict.fromkeys([*config.peers, *join.addresses]))
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        identity = Identity.generate()
        write_file_atomic(path / SECRET_FILE, secrets.token_bytes(32).hex().encode() + b"\n")
        if not open_network:
            network_secret = join.secret if join is not None else secrets.token_bytes(32)
            write_file_atomic(path / NETWORK_FILE, network_secret.hex().encode() + b"\n")
        write_file_atomic(path / CONFIG_FILE, config.to_toml().encode(), mode=0o644)
        (path / BLOCKS_DIR).mkdir(exist_ok=True)
        # The key is written last: its presence marks a complete data dir.
        identity.save(path / KEY_FILE)
    except OSError as exc:
        raise ConfigError(f"cannot create data dir {path}: {exc.strerror}") from exc
    return load_data_dir(path), True


def join_network(path: Path, invite: Invite) -> None:
    """Move an initialized data dir into the invite's closed network (its node must be stopped).

    The invite's addresses are added to the bootstrap peers in config.toml.
    """
    data = load_data_dir(path)
    config = data.config
    config.peers = list(dict.fromkeys([*config.peers, *invite.addresses]))
    try:
        write_file_atomic(path / NETWORK_FILE, invite.secret.hex().encode() + b"\n")
        write_file_atomic(path / CONFIG_FILE, config.to_toml().encode(), mode=0o644)
    except OSError as exc:
        raise ConfigError(f"cannot update data dir {path}: {exc.strerror}") from exc


def _read_secret(path: Path, *, what: str) -> bytes:
    try:
        secret = bytes.fromhex(path.read_text().strip())
    except FileNotFoundError as exc:
        raise ConfigError(f"{path} is missing; restore it from a backup") from exc
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} is unreadable or not hex") from exc
    if len(secret) != 32:
        raise ConfigError(f"{path} must hold the 32-byte {what} as hex")
    return secret


def load_data_dir(path: Path) -> DataDir:
    """Load an initialized data dir; ``ConfigError`` with what to do if it is not one."""
    if not path.is_dir():
        raise ConfigError(f"data dir {path} does not exist: run `shoal init --data-dir {path}`")
    identity = Identity.load(path / KEY_FILE)
    secret = _read_secret(path / SECRET_FILE, what="convergence secret")
    config_path = path / CONFIG_FILE
    config = NodeConfig()
    if config_path.exists():
        try:
            config = NodeConfig.from_mapping(tomllib.loads(config_path.read_text()), config_path)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{config_path} is not valid TOML: {exc}") from exc
    (path / BLOCKS_DIR).mkdir(exist_ok=True)
    if os.name == "posix":
        mode = (path / KEY_FILE).stat().st_mode & 0o077
        if mode:
            (path / KEY_FILE).chmod(0o600)
    if (path / NETWORK_FILE).exists():
        network = NetworkMembership.closed(_read_secret(path / NETWORK_FILE, what="network secret"))
    else:
        network = NetworkMembership(config.network)
    return DataDir(
        path=path, identity=identity, convergence_secret=secret, config=config, network=network
    )


def parse_erasure(text: str, what: str = "erasure") -> tuple[int, int]:
    """``"K-of-N"`` as ``(k, n)``, checked (1 <= k < n <= 32).

    Raises:
        ConfigError: Not that form or out of range; the message says what is expected.
    """
    try:
        redundancy = Redundancy.parse_erasure(text)
    except ValueError as exc:
        raise ConfigError(f"{what}: {exc}") from None
    return redundancy.k, redundancy.n
