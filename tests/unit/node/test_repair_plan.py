"""The pure decisions of repair: what counts as a copy, hysteresis, throttle, cursor, state."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.ids import encode_id
from shoal.node.repair_plan import (
    ByteBudget,
    Presence,
    plan_block,
    presence_of_unreachable,
    rank_by_distance,
    roots_in_cursor_order,
)
from shoal.node.repair_state import FileHealth, RepairState

H, L, A, X = Presence.HOLDS, Presence.LACKS, Presence.ABSENT, Presence.LOST


def node(i: int) -> bytes:
    return bytes([i]) * 32


def ranked(*presences: Presence) -> list[tuple[bytes, Presence]]:
    return [(node(i), p) for i, p in enumerate(presences)]


# -- what counts as a copy ----------------------------------------------------------------------


def test_three_live_holders_are_healthy_and_nothing_moves() -> None:
    plan = plan_block(ranked(H, H, H, L, L), 3)
    assert (plan.copies, plan.presumed, plan.targets) == (3, 0, ())
    assert not plan.waiting


def test_copies_count_only_on_the_r_closest_live_nodes() -> None:
    # A fourth copy farther away does not make up for a closer node that lacks it.
    plan = plan_block(ranked(H, L, H, H), 3)
    assert plan.copies == 2
    assert plan.targets == (node(1),)


def test_a_lost_node_is_replaced_by_the_next_closest_at_once() -> None:
    plan = plan_block(ranked(X, H, H, L, L), 3)
    assert plan.copies == 2
    assert plan.targets == (node(3),)
    assert plan.placement == (node(1), node(2), node(3))


def test_fewer_nodes_than_r_copy_to_every_live_node() -> None:
    plan = plan_block(ranked(H, L), 3)
    assert (plan.copies, plan.targets) == (1, (node(1),))


# -- hysteresis -----------------------------------------------------------------------------------


def test_an_absent_node_counts_as_holding_while_two_live_copies_remain() -> None:
    plan = plan_block(ranked(A, H, H, L, L), 3)
    assert plan.waiting
    assert (plan.copies, plan.presumed, plan.targets) == (2, 1, ())


def test_a_live_node_lacking_the_block_gets_it_even_while_waiting() -> None:
    # A node joined among the closest: it is not waiting for anybody.
    plan = plan_block(ranked(A, L, H, H), 3)
    assert plan.waiting
    assert plan.targets == (node(1),)


def test_the_last_live_copy_is_not_waited_for() -> None:
    plan = plan_block(ranked(A, A, H, L, L), 3)
    assert plan.last_copy
    assert not plan.waiting
    assert plan.targets == (node(3), node(4))


def test_a_repair_asked_for_now_does_not_wait() -> None:
    plan = plan_block(ranked(A, H, H, L), 3, wait_for_absent=False)
    assert not plan.waiting
    assert plan.targets == (node(3),)


def test_an_absent_node_becomes_lost_when_the_delay_runs_out() -> None:
    assert presence_of_unreachable(100.0, now=150.0, delay=60.0) is Presence.ABSENT
    assert presence_of_unreachable(100.0, now=160.0, delay=60.0) is Presence.LOST
    assert presence_of_unreachable(None, now=160.0, delay=60.0) is Presence.LOST


@given(st.lists(st.sampled_from(list(Presence)), max_size=12), st.integers(1, 5), st.booleans())
def test_targets_are_always_live_nodes_lacking_the_block(
    presences: list[Presence], replicas: int, wait: bool
) -> None:
    plan = plan_block(ranked(*presences), replicas, wait_for_absent=wait)
    given_presence = dict(ranked(*presences))
    assert all(given_presence[t] is Presence.LACKS for t in plan.targets)
    assert plan.copies + len(plan.targets) <= replicas
    live = [p for p in presences if p in (H, L)]
    if not plan.waiting:  # not waiting: the R closest live nodes end up holding it
        assert plan.copies + len(plan.targets) == min(replicas, len(live))


def test_rank_by_distance_is_xor_order() -> None:
    target = bytes(32)
    assert rank_by_distance(target, [node(3), node(1), node(2), node(1)]) == [
        node(1),
        node(2),
        node(3),
    ]


# -- throttle -----------------------------------------------------------------------------------


def test_budget_lets_a_burst_through_then_paces() -> None:
    budget = ByteBudget(1000.0)
    assert budget.take(1000, now=0.0) == 0.0
    assert budget.take(500, now=0.0) == pytest.approx(0.5)
    # The debt is paid by time: half a second later the next 500 bytes wait 0.5 s more.
    assert budget.take(500, now=0.5) == pytest.approx(0.5)
    assert budget.take(100, now=10.0) == 0.0  # idle refills, up to the burst


def test_no_rate_means_no_wait() -> None:
    budget = ByteBudget(None)
    assert budget.take(1 << 30, now=0.0) == 0.0
    assert ByteBudget(0).take(1 << 30, now=0.0) == 0.0


# -- cursor -------------------------------------------------------------------------------------


def test_a_pass_resumes_after_the_cursor_and_wraps_around() -> None:
    roots = [node(5), node(1), node(3)]
    assert roots_in_cursor_order(roots, None) == [node(1), node(3), node(5)]
    assert roots_in_cursor_order(roots, node(3)) == [node(5), node(1), node(3)]
    assert roots_in_cursor_order(roots, node(4)) == [node(5), node(1), node(3)]  # root gone


def test_state_round_trips_through_its_file(tmp_path: Path) -> None:
    path = tmp_path / "repair.json"
    state = RepairState(
        cursor=node(2),
        absent={node(7): 123.5},
        due={node(2): 456.0},
        health={node(2): FileHealth("degraded", 2, 3, 99.0)},
        passes=4,
        last_pass=88.0,
    )
    RepairState.write(path, state.encode())
    again = RepairState.load(path)
    assert again == state
    assert json.loads(path.read_text())["cursor"] == encode_id(node(2))


@pytest.mark.parametrize(
    "content", [b"{not json", b'{"version": 99}', b'{"version": 1, "cursor": "??"}', b"[]"]
)
def test_an_unreadable_state_starts_afresh(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "repair.json"
    path.write_bytes(content)
    state = RepairState.load(path)
    assert state.cursor is None
    assert state.absent == {}


def test_a_missing_state_is_a_fresh_start(tmp_path: Path) -> None:
    assert RepairState.load(tmp_path / "nothing.json") == RepairState()
