"""Hypothesis strategies for every message type."""

from __future__ import annotations

from hypothesis import strategies as st

from shoal.protocol import (
    Auth,
    BlockData,
    Error,
    GetBlock,
    GetPeers,
    HasBlocks,
    HaveBlocks,
    Hello,
    Message,
    PeerAddress,
    Peers,
    Ping,
    Pong,
    PutBlock,
    PutBlockOk,
)

ids = st.binary(min_size=32, max_size=32)
addr = st.text(max_size=40)
addrs = st.lists(addr, max_size=16).map(tuple)

hellos = st.builds(
    Hello,
    version=st.integers(min_value=0, max_value=2**64 - 1),
    node_id=ids,
    public_key=ids,
    listen_addrs=addrs,
    network=st.text(min_size=1, max_size=64),
    nonce=ids,
)
auths = st.builds(Auth, signature=st.binary(min_size=64, max_size=64), mac=st.none() | ids)
errors = st.builds(Error, code=st.text(min_size=1, max_size=64), message=st.text(max_size=1024))
peers = st.builds(
    Peers,
    peers=st.lists(
        st.builds(PeerAddress, node_id=ids, addrs=st.lists(addr, max_size=3).map(tuple)),
        max_size=40,
    ).map(tuple),
)
data = st.binary(max_size=70_000)

messages: st.SearchStrategy[Message] = st.one_of(
    hellos,
    auths,
    errors,
    st.just(Ping()),
    st.just(Pong()),
    st.just(GetPeers()),
    peers,
    st.builds(PutBlock, block_id=ids, data=data),
    st.builds(PutBlockOk, block_id=ids),
    st.builds(GetBlock, block_id=ids),
    st.builds(BlockData, block_id=ids, data=data),
    st.builds(HasBlocks, block_ids=st.lists(ids, max_size=200).map(tuple)),
    st.builds(HaveBlocks, present=st.lists(st.booleans(), max_size=4096).map(tuple)),
)
