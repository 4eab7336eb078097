"""The ``shoal`` command line.

``init``, ``run`` and ``demo`` run nodes in this process; the other commands talk to the node
running on ``--data-dir`` through its local HTTP API (``shoal.Client``). Results go to stdout
(``--json`` for scripts), progress bars and messages to stderr. Every ``ShoalError`` becomes one
line ``error: <message>`` and exit code 1; bad usage exits 2; Ctrl-C exits 130.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import sys
from pathlib import Path
from typing import Any

import click

from shoal import defaults
from shoal.cli.demo import run_demo
from shoal.cli.files import default_file_name, output_path
from shoal.cli.health import check as check_command
from shoal.cli.health import repair as repair_command
from shoal.cli.leases import gc as gc_command
from shoal.cli.leases import pin as pin_command
from shoal.cli.options import data_dir_option, json_option, print_json
from shoal.cli.output import (
    format_age,
    format_size,
    format_table,
    format_time,
    transfer_progress,
)
from shoal.cli.run import NodeSettings, configure_logging, refuse_if_running, run_node
from shoal.cli.scrub import format_scrub, parse_rate
from shoal.cli.scrub import scrub as scrub_command
from shoal.cli.ui import ui as ui_command
from shoal.client.http import Client, check_read_cap
from shoal.content.caps import looks_like_cap
from shoal.content.manifest import MAX_REPLICAS, Redundancy
from shoal.errors import ConfigError, NotFound, ShoalError, StorageError
from shoal.names import check_name, printable
from shoal.node.datadir import load_data_dir, parse_erasure
from shoal.node.network import Invite, parse_invite
from shoal.node.service import init_data_dir
from shoal.protocol.messages import MAX_NODES
from shoal.transport.limits import limits_with
from shoal.transport.manager import parse_address
from shoal.units import parse_size

__all__ = ["cli", "main"]


EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class ShoalGroup(click.Group):
    """Maps errors to one line on stderr and an exit code, for every subcommand."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ShoalError as exc:
            click.echo(f"error: {_one_line(exc)}", err=True)
            raise click.exceptions.Exit(EXIT_ERROR) from None
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
        except BrokenPipeError:
            # The reader of stdout went away (`shoal ls | head`): stop quietly, and point
            # stdout at /dev/null so the interpreter's final flush does not complain.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise click.exceptions.Exit(EXIT_ERROR) from None


def _one_line(exc: ShoalError) -> str:
    """The error's message on one line, safe to print (control characters escaped)."""
    return printable(" ".join(str(exc).split())) or type(exc).__name__


@click.group(cls=ShoalGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="shoal", prog_name="shoal")
def cli() -> None:
    """Shoal: a peer-to-peer, end-to-end encrypted, content-addressed file store."""


@cli.command()
@data_dir_option()
@click.option(
    "--join",
    "invite",
    metavar="INVITE",
    default=None,
    help="Join the closed network of this invite (printed by `shoal invite` on a member).",
)
@click.option(
    "--open",
    "open_network",
    is_flag=True,
    help="Join the open network (any node can connect) instead of making a closed one.",
)
def init(data_dir: Path, invite: str | None, open_network: bool) -> None:
    """Create a data dir: node key, secrets, config. Prints the node ID.

    By default the node starts a new closed network: only nodes that were given an invite
    (`shoal invite`) can connect to it. An existing data dir is left as it is, except that
    --join moves it into the invite's network (stop its node first).
    """
    if invite is not None and open_network:
        raise click.UsageError("--join and --open exclude each other")
    if invite is not None:
        invite_value = parse_invite(invite)  # a damaged invite fails before anything is made
        if Path(data_dir, "api.json").exists():
            refuse_if_running(data_dir)
    node_id, created = init_data_dir(
        data_dir, join=invite_value if invite is not None else None, open_network=open_network
    )
    if created:
        if invite is not None:
            how = "joined the invite's closed network"
        elif open_network:
            how = "in the open network"
        else:
            how = "made a new closed network: `shoal invite` lets other nodes join it"
        click.echo(f"initialized {data_dir}: {how}", err=True)
    elif invite is not None:
        click.echo(f"{data_dir} now belongs to the invite's network", err=True)
    else:
        click.echo(f"{data_dir} is already initialized", err=True)
    click.echo(node_id)


@cli.command()
@data_dir_option()
@click.option(
    "--address",
    "addresses",
    multiple=True,
    metavar="HOST:PORT",
    help="Where new nodes should find this one (repeatable; default: the running node's address).",
)
def invite(data_dir: Path, addresses: tuple[str, ...]) -> None:
    """Print a one-line invite into this node's closed network, for `shoal init --join`.

    The invite holds the network's secret: share it like a password.
    """
    data = load_data_dir(data_dir)
    if data.network.secret is None:
        raise ConfigError(
            f"{data_dir} is in the open network: other nodes join it with `shoal init --open` "
            "and `shoal run --peer ADDRESS`; no invite is needed"
        )
    if not addresses:
        with Client.from_data_dir(data_dir) as client:
            status = client.status()
        advertised = status.get("advertise")
        addresses = tuple(str(a) for a in advertised) if isinstance(advertised, list) else ()
        if not addresses:
            raise ConfigError(
                "the running node advertises no address other nodes could reach: name one "
                "with --address HOST:PORT, or run the node with --advertise HOST:PORT"
            )
    for address in addresses:
        parse_address(address)
    click.echo(str(Invite(data.network.secret, addresses)))


@cli.command()
@data_dir_option()
@click.option(
    "--listen",
    default=None,
    metavar="HOST:PORT",
    help="Address for peers to connect to (default: from config.toml, else 127.0.0.1:0; "
    "port 0 picks a free port).",
)
@click.option(
    "--peer",
    "peers",
    multiple=True,
    metavar="HOST:PORT",
    help="A peer to connect to (repeatable); it may start later.",
)
@click.option(
    "--replicas",
    type=click.IntRange(min=1),
    default=None,
    help="Copies of each block to place (default from config, usually 3).",
)
@click.option(
    "--erasure",
    default=None,
    metavar="K-of-N",
    help="Erasure-code new files by default instead, e.g. 3-of-5: each chunk as N shares on N "
    "distinct nodes, any K rebuild it (default: config.toml's node.erasure, else replicas).",
)
@click.option(
    "--advertise",
    "advertise",
    multiple=True,
    metavar="HOST:PORT",
    help="An address peers should use to reach this node (repeatable; default: the listen "
    "address, or the host's interface addresses when listening on 0.0.0.0 or ::).",
)
@click.option(
    "--max-storage",
    default=None,
    metavar="SIZE",
    help="Most bytes of blocks to keep, e.g. 50GiB (default: config.toml, else no limit but "
    "the reserve).",
)
@click.option(
    "--reserved-space",
    default=None,
    metavar="SIZE",
    help="Free disk never to use (default: config.toml, else 5%% of the disk, at most 1 GiB).",
)
@click.option(
    "--max-connections",
    type=click.IntRange(min=1),
    default=None,
    help=f"Most open node-to-node connections (default {defaults.MAX_CONNECTIONS}).",
)
@click.option(
    "--dht-k",
    "dht_k",
    type=click.IntRange(min=1, max=MAX_NODES),
    default=None,
    metavar="N",
    help="The DHT's k: routing-table bucket size, nodes per lookup answer and lookup width "
    f"(1 to {MAX_NODES}; default: config.toml's dht.k, else {defaults.DHT_K}).",
)
@click.option(
    "--dht-alpha",
    "dht_alpha",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="The DHT's alpha: FIND_NODE queries a lookup keeps in flight (default: config.toml's "
    f"dht.alpha, else {defaults.DHT_ALPHA}).",
)
@click.option(
    "--limit",
    "limit_settings",
    multiple=True,
    metavar="NAME=VALUE",
    help="Change any transport limit (repeatable), e.g. --limit max_pending=32; the names "
    "and defaults are in docs/decisions/0004-transport-limits.md.",
)
@click.option(
    "--grpc",
    "grpc_address",
    default=None,
    metavar="HOST:PORT",
    help="Also serve the gRPC API (shoal.v1.Storage, docs/grpc.md) there; :PORT or PORT alone "
    "means 127.0.0.1, port 0 a free port. Its address goes into api.json as grpc.",
)
@click.option(
    "--no-mdns",
    "no_mdns",
    is_flag=True,
    help="Do not look for nodes on the local network with mDNS, nor announce this one (also "
    "config.toml's node.mdns = false; a node listening on 127.0.0.1 never uses mDNS).",
)
@click.option(
    "--repair-delay",
    type=click.FloatRange(min=0),
    default=None,
    metavar="SECONDS",
    help="How long a node must be unreachable before its copies count as lost and are made "
    "again elsewhere (default: config.toml's node.repair_delay, else "
    f"{defaults.REPAIR_DELAY:.0f}; a block down to its last copy is copied at once).",
)
@click.option(
    "--no-background-repair",
    "no_background_repair",
    is_flag=True,
    help="Do not check and repair files by itself; `shoal repair` still runs a pass when "
    "asked (for a node whose disk or link must stay quiet, and for tests).",
)
@click.option(
    "--repair-rate",
    default=None,
    metavar="SIZE",
    help="Bytes per second background repair may move, e.g. 8MiB; 0 for no limit "
    f"(default {defaults.REPAIR_RATE >> 20} MiB).",
)
@click.option(
    "--gc-grace",
    "gc_grace",
    type=click.FloatRange(min=0),
    default=None,
    metavar="SECONDS",
    help="Keep a block no live lease holds this long before garbage collection frees it "
    "(default: config.toml's node.gc_grace, else 86400, 24 hours).",
)
@click.option(
    "--pending-lease",
    "pending_lease",
    type=click.FloatRange(min=0),
    default=None,
    metavar="SECONDS",
    help="How long the short lease of a put in progress lasts on its holders (default 3600).",
)
@click.option(
    "--scrub-interval",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="Mean time between scrub passes (every block re-hashed), randomized per node "
    f"(default {defaults.SCRUB_INTERVAL / 86400:g} days).",
)
@click.option(
    "--scrub-rate",
    default=None,
    metavar="SIZE",
    help="Bytes per second a scrub pass may read, e.g. 10MiB "
    f"(default {defaults.SCRUB_RATE >> 20} MiB).",
)
@click.option(
    "--handoff-interval",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="Time between handoff passes, which move blocks to the nodes now closest to them "
    f"(default {defaults.HANDOFF_INTERVAL:g}).",
)
@click.option(
    "--handoff-rate",
    default=None,
    metavar="SIZE",
    help="Bytes per second the handoff (rebalancing) may send, e.g. 10MiB "
    f"(default {defaults.HANDOFF_RATE >> 20} MiB).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
def run(
    data_dir: Path,
    listen: str | None,
    peers: tuple[str, ...],
    replicas: int | None,
    erasure: str | None,
    advertise: tuple[str, ...],
    max_storage: str | None,
    reserved_space: str | None,
    max_connections: int | None,
    dht_k: int | None,
    dht_alpha: int | None,
    limit_settings: tuple[str, ...],
    grpc_address: str | None,
    no_mdns: bool,
    repair_delay: float | None,
    repair_rate: str | None,
    no_background_repair: bool,
    gc_grace: float | None,
    pending_lease: float | None,
    scrub_interval: float | None,
    scrub_rate: str | None,
    handoff_interval: float | None,
    handoff_rate: str | None,
    verbose: bool,
) -> None:
    """Run a node (initializing the data dir if needed) until Ctrl-C or SIGTERM.

    On a LAN address (or 0.0.0.0) the node finds the other nodes of its network on the local
    network by mDNS, with no --peer needed.
    """
    limits: dict[str, object] = {}
    for setting in limit_settings:
        name, sep, value = setting.partition("=")
        if not sep or not name.strip():
            raise click.BadParameter("expected NAME=VALUE", param_hint="--limit")
        limits[name.strip()] = value.strip()
    if max_connections is not None:
        limits["max_connections"] = max_connections
    limits_with(limits, source="--limit")  # bad names and values fail before anything starts
    if erasure is not None:
        parse_erasure(erasure, "--erasure")
    for address in advertise:
        parse_address(address)
    if grpc_address is not None:
        # Imported here: grpcio is loaded only by the nodes that serve it, not by every command.
        from shoal.api.grpc import parse_grpc_address

        parse_grpc_address(grpc_address)
    configure_logging(logging.DEBUG if verbose else logging.INFO)
    refuse_if_running(data_dir)
    settings = NodeSettings(
        listen=listen,
        peers=list(peers),
        replicas=replicas,
        erasure=erasure,
        advertise=list(advertise),
        max_storage=None if max_storage is None else parse_size(max_storage, what="--max-storage"),
        reserved_space=(
            None if reserved_space is None else parse_size(reserved_space, what="--reserved-space")
        ),
        limits=limits,
        grpc=grpc_address,
        mdns=not no_mdns,
        repair_delay=repair_delay,
        repair_rate=None if repair_rate is None else parse_size(repair_rate, what="--repair-rate"),
        gc_grace=gc_grace,
        pending_lease=pending_lease,
        options={
            name: value
            for name, value in {
                "scrub_interval": scrub_interval,
                "scrub_rate": parse_rate(scrub_rate, what="--scrub-rate"),
                "handoff_interval": handoff_interval,
                "handoff_rate": parse_rate(handoff_rate, what="--handoff-rate"),
                "background_repair": False if no_background_repair else None,
            }.items()
            if value is not None
        },
        dht={
            name: value
            for name, value in {"k": dht_k, "alpha": dht_alpha}.items()
            if value is not None
        },
    )
    asyncio.run(run_node(data_dir, settings))


@cli.command()
@data_dir_option()
# Not click.Path(exists=True): a missing file is a failed operation (one `error:` line, exit
# 1) like any other, not a usage error with a usage banner.
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
@click.option(
    "--name",
    default=None,
    help="Name in the catalog (default: the file's name). Needed for '-' (standard input); "
    "only with one FILE.",
)
@click.option(
    "-r",
    "--recursive",
    is_flag=True,
    help="Store folders: each FILE is a folder, stored whole as one cap (symbolic links and "
    "special files are skipped).",
)
@click.option(
    "--replicas",
    default=None,
    metavar="R",
    help="Keep R copies of each block (1 to 255; default: the node's setting, usually 3).",
)
@click.option(
    "--erasure",
    default=None,
    metavar="K-of-N",
    help="Erasure-code each chunk into N shares on N distinct nodes, any K of which rebuild "
    "it, e.g. 3-of-5 (1 <= K < N <= 32; see docs/erasure.md).",
)
def put(
    data_dir: Path,
    files: tuple[str, ...],
    name: str | None,
    recursive: bool,
    replicas: str | None,
    erasure: str | None,
) -> None:
    """Store each FILE ('-' for standard input) through the running node.

    Prints each file's read cap on stdout, one line per file stored, and "stored NAME (SIZE)"
    on stderr. When one of several files fails, its error is reported and the others are
    still stored; the exit code is then 1. With -r, each FILE is a folder.
    """
    redundancy = _put_redundancy(replicas, erasure, recursive=recursive)
    if recursive:
        _put_folders(data_dir, files, name)
        return
    if name is not None:
        check_name(name, what="--name")
        if len(files) > 1:
            raise click.UsageError("--name names a single file: give one FILE with it")
    if "-" in files and name is None:
        raise click.UsageError("put - reads standard input: give it a name with --name")
    names = [name if name is not None else Path(file).name for file in files]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        shown = ", ".join(printable(n) for n in repeated[:3])
        raise ConfigError(f"several files would be named {shown}: store them one by one")
    failures = 0

    def failed(file: str, exc: ShoalError) -> None:
        nonlocal failures
        if len(files) == 1:
            raise exc
        failures += 1
        click.echo(f"error: {printable(file)}: {_one_line(exc)}", err=True)

    # What can be checked here is, before the node is asked anything.
    todo = []
    for file, file_name in zip(files, names, strict=True):
        try:
            check_name(file_name)
            if file != "-":
                _check_input_file(Path(file))
        except ShoalError as exc:
            failed(file, exc)
        else:
            todo.append((file, file_name))
    under_replicated: tuple[int, int, str] | None = None
    if todo:
        with Client.from_data_dir(data_dir) as client:
            for file, file_name in todo:
                try:
                    result = _put_one(client, file, file_name, **redundancy)
                except ShoalError as exc:
                    failed(file, exc)
                    continue
                size = format_size(result.get("size"))
                click.echo(f"stored {printable(result['name'])} ({size})", err=True)
                copies, wanted = result.get("replicas"), result.get("replicas_wanted")
                if isinstance(copies, int) and isinstance(wanted, int) and copies < wanted:
                    scheme = result.get("redundancy")
                    coded = isinstance(scheme, dict) and scheme.get("kind") == "erasure"
                    what = "shares of some chunks" if coded else "copies of some blocks"
                    under_replicated = under_replicated or (copies, wanted, what)
                click.echo(result["cap"])
    if under_replicated is not None:
        copies, wanted, what = under_replicated
        click.echo(
            f"warning: only {copies} of {wanted} {what} could be stored (too few "
            "nodes up or with room); the file does not yet survive the loss of the nodes that "
            "hold it",
            err=True,
        )
    if failures:
        raise click.exceptions.Exit(EXIT_ERROR)


def _put_folders(data_dir: Path, folders: tuple[str, ...], name: str | None) -> None:
    """``shoal put -r``: store each folder, print its cap."""
    if name is not None:
        check_name(name, what="--name")
        if len(folders) > 1:
            raise click.UsageError("--name names a single folder: give one FOLDER with it")
    if "-" in folders:
        raise click.UsageError("put -r stores folders; '-' (standard input) is a single file")
    failures = 0
    with Client.from_data_dir(data_dir) as client:
        for folder in folders:
            label = name if name is not None else Path(folder).resolve().name
            try:
                with transfer_progress(f"put {printable(label)}/") as bar:
                    result = client.put_folder(Path(folder), name=name, progress=bar)
            except ShoalError as exc:
                if len(folders) == 1:
                    raise
                failures += 1
                click.echo(f"error: {printable(folder)}: {_one_line(exc)}", err=True)
                continue
            click.echo(
                f"stored folder {printable(result['name'])} ({result.get('files')} files, "
                f"{format_size(result.get('size'))})",
                err=True,
            )
            skipped = result.get("skipped") or []
            if skipped:
                shown = ", ".join(printable(str(s)) for s in skipped[:5])
                more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
                click.echo(
                    f"warning: skipped {len(skipped)} symbolic link(s) or special file(s): "
                    f"{shown}{more}",
                    err=True,
                )
            click.echo(result["cap"])
    if failures:
        raise click.exceptions.Exit(EXIT_ERROR)


def _put_one(client: Client, file: str, name: str, **redundancy: Any) -> dict[str, Any]:
    """Store one file (or standard input for ``-``) as ``name``, with a progress bar."""
    with transfer_progress(f"put {printable(name)}") as bar:
        if file == "-":
            return client.put(sys.stdin.buffer, name=name, progress=bar, **redundancy)
        return client.put(Path(file), name=name, progress=bar, **redundancy)


def _put_redundancy(
    replicas: str | None, erasure: str | None, *, recursive: bool
) -> dict[str, Any]:
    """``put --replicas R`` / ``--erasure K-of-N`` as ``Client.put`` arguments; a bad value is
    one ``error:`` line and exit code 2 (bad usage)."""

    def usage(message: str) -> click.exceptions.Exit:
        click.echo(f"error: {message}", err=True)
        return click.exceptions.Exit(EXIT_USAGE)

    if replicas is None and erasure is None:
        return {}
    if replicas is not None and erasure is not None:
        raise usage("give --replicas or --erasure, not both")
    if recursive:
        raise usage("--replicas and --erasure apply to files; folders (-r) use the node's setting")
    if replicas is not None:
        text = replicas.strip()
        if (
            not (text.isascii() and text.isdigit() and len(text) <= 3)
            or not 1 <= int(text) <= MAX_REPLICAS
        ):
            raise usage(f"--replicas must be a whole number from 1 to {MAX_REPLICAS}")
        return {"replicas": int(text)}
    assert erasure is not None
    try:
        scheme = Redundancy.parse_erasure(erasure)
    except ValueError as exc:
        raise usage(f"--erasure: {exc}") from None
    return {"erasure": str(scheme)}


def _check_input_file(file: Path) -> None:
    """Fail early, before reaching the node, if ``file`` cannot be put."""
    try:
        mode = file.stat().st_mode
    except FileNotFoundError:
        raise NotFound(f"no such file: {file}") from None
    except OSError as exc:
        raise StorageError(f"cannot read {file}: {exc.strerror or exc}") from exc
    if stat.S_ISDIR(mode):
        raise ConfigError(f"{file} is a directory: put stores one file")


@cli.command()
@data_dir_option()
@click.argument("name_or_cap", metavar="NAME_OR_CAP")
@click.option(
    "-o",
    "--output",
    default=None,
    metavar="PATH",
    help="Where to write: a file, a directory (DIR/ or an existing one), or '-' for stdout. "
    "Default: the last part of NAME, or the CID for a cap, in the current directory.",
)
@click.option("-f", "--force", is_flag=True, help="Replace an existing file (or folder, with -r).")
@click.option(
    "-r",
    "--recursive",
    is_flag=True,
    help="Get a folder: restore it as the folder OUTPUT, with its times and modes.",
)
def get(data_dir: Path, name_or_cap: str, output: str | None, force: bool, recursive: bool) -> None:
    """Get a file by name or read cap (shoal:r:...) and write it to a file or stdout.

    An existing file is never replaced without --force; a failed get leaves no file. With -r,
    a folder is restored as the folder OUTPUT (default: its name, or its CID for a cap).
    """
    is_cap = looks_like_cap(name_or_cap)
    if is_cap:
        check_read_cap(name_or_cap)  # a typo in a cap is reported even with no node running
    label = "get by cap" if is_cap else f"get {printable(name_or_cap)}"
    if recursive:
        if output == "-":
            raise click.UsageError("get -r writes a folder: -o - (standard output) is for files")
        folder = Path(output) if output is not None else Path(default_file_name(name_or_cap))
        if not force and os.path.lexists(folder):
            raise ConfigError(
                f"{folder} already exists: use --force to replace it, or -o elsewhere"
            )
        with Client.from_data_dir(data_dir) as client, transfer_progress(label + "/") as bar:
            result = client.get_folder(name_or_cap, folder, progress=bar, overwrite=force)
        click.echo(
            f"wrote folder {folder} ({result['files']} files, {format_size(result['size'])})",
            err=True,
        )
        return
    if output == "-":
        with Client.from_data_dir(data_dir) as client, transfer_progress(label) as bar:
            stdout = sys.stdout.buffer
            client.get_into(name_or_cap, stdout, progress=bar)
            stdout.flush()
        return
    dest = output_path(name_or_cap, output)
    if not force and os.path.lexists(dest):
        raise ConfigError(f"{dest} already exists: use --force to replace it, or -o elsewhere")
    with Client.from_data_dir(data_dir) as client, transfer_progress(label) as bar:
        size = client.get(name_or_cap, dest, progress=bar, overwrite=force)
    click.echo(f"wrote {dest} ({format_size(size)})", err=True)


@cli.command(name="ls")
@data_dir_option()
@json_option
@click.argument("folder", metavar="[FOLDER]", required=False)
def ls(data_dir: Path, as_json: bool, folder: str | None) -> None:
    """List the files in the node's catalog, or the entries of FOLDER (a name or read cap)."""
    if folder is not None:
        if looks_like_cap(folder):
            check_read_cap(folder)
        with Client.from_data_dir(data_dir) as client:
            listing = client.list_folder(folder)
        if as_json:
            print_json(listing)
            return
        rows = [
            [
                "dir" if e["type"] == "dir" else "file",
                format_size(e.get("size")),
                format_time(e.get("mtime")),
                printable(str(e["name"])) + ("/" if e["type"] == "dir" else ""),
                str(e["cap"]),
            ]
            for e in listing["entries"]
        ]
        click.echo(format_table(["TYPE", "SIZE", "MODIFIED", "NAME", "CAP"], rows))
        return
    with Client.from_data_dir(data_dir) as client:
        files = client.list_files()
    if as_json:
        print_json(files)
        return
    rows = [[printable(str(f["name"])), format_size(f.get("size")), f["cap"]] for f in files]
    click.echo(format_table(["NAME", "SIZE", "CAP"], rows))


@cli.command()
@data_dir_option()
@click.argument("name")
def rm(data_dir: Path, name: str) -> None:
    """Remove NAME from the node's catalog and release this node's leases on its blocks on
    every node that can be reached (garbage collection then frees what no one else keeps)."""
    with Client.from_data_dir(data_dir) as client:
        client.remove(name)
    click.echo(f"removed {name}")


@cli.command()
@data_dir_option()
@json_option
def peers(data_dir: Path, as_json: bool) -> None:
    """List the routing table: node ID, address, state (up/down), connected, source, last seen.

    A node is up when connected or heard from in the last minute; source says how it was
    learnt (bootstrap, mdns, dht, exchange or inbound)."""
    with Client.from_data_dir(data_dir) as client:
        found = client.peers()
    if as_json:
        print_json(found)
        return
    rows = [
        [
            p["node_id"],
            p.get("address") or "-",
            p["state"],
            "yes" if p.get("connected") else "no",
            p.get("source") or "-",
            format_age(p.get("last_seen")),
        ]
        for p in found
    ]
    click.echo(
        format_table(["NODE ID", "ADDRESS", "STATE", "CONNECTED", "SOURCE", "LAST SEEN"], rows)
    )


@cli.command()
@data_dir_option()
@json_option
def status(data_dir: Path, as_json: bool) -> None:
    """Show the node's ID, addresses, peers and storage use."""
    with Client.from_data_dir(data_dir) as client:
        info = client.status()
    if as_json:
        print_json(info)
        return
    for key, value in info.items():
        if key in ("bytes", "bytes_for_others", "repair_bytes") and isinstance(value, int):
            shown = format_size(value)
        elif key == "scrub":
            shown = format_scrub(value)
        elif isinstance(value, float):
            shown = f"{value:.1f}"
        elif isinstance(value, str | int):
            shown = str(value)
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            shown = ", ".join(value) or "-"
        else:
            shown = json.dumps(value)
        click.echo(f"{key}: {shown}")


@cli.command()
@click.option("--once", is_flag=True, help="Exit after the round trip instead of running on.")
@click.option(
    "--ephemeral-ports", is_flag=True, help="Listen on free ports instead of 3000/4000/5000."
)
@click.option(
    "--data-root",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep the three data dirs here (default: a temporary dir removed at exit).",
)
@click.option("-v", "--verbose", is_flag=True, help="Also log the nodes' messages (INFO).")
def demo(once: bool, ephemeral_ports: bool, data_root: Path | None, verbose: bool) -> None:
    """Start three nodes, store picture_1.png from one and get it back from the network."""
    # Three nodes in one process log a lot; the demo's own steps go to stdout.
    configure_logging(logging.INFO if verbose else logging.WARNING)
    asyncio.run(run_demo(once=once, ephemeral_ports=ephemeral_ports, data_root=data_root))


cli.add_command(ui_command)
cli.add_command(check_command)
cli.add_command(repair_command)
cli.add_command(pin_command)
cli.add_command(gc_command)
cli.add_command(scrub_command)


def main() -> None:
    """Console-script entry point of ``shoal``."""
    cli(prog_name="shoal")


if __name__ == "__main__":
    main()
