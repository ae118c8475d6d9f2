"""Pareto-aware successive halving: which trials go on past a rung, worked
out by hand on small sets of (val accuracy at the rung, MACs[, params])
points (accuracy: higher is better; costs: lower is better), the minimum of
peers a verdict needs, and who counts as a peer."""
import itertools
import math
import random
from types import SimpleNamespace

import pytest

from nas.search.halving import (
    MIN_PEERS_PER_ETA,
    continues,
    crowding_distances,
    dominates,
    minimum_peers,
    nondominated_ranks,
    selection_order,
    survivors,
)

INF = math.inf


# --------------------------------------------------------------------------- dominance


@pytest.mark.parametrize("a,b,expected", [
    ((0.9, 10), (0.8, 10), True),   # better accuracy, same MACs
    ((0.9, 10), (0.9, 12), True),   # same accuracy, fewer MACs
    ((0.9, 10), (0.8, 12), True),   # better in both
    ((0.8, 10), (0.9, 10), False),  # worse accuracy
    ((0.9, 12), (0.9, 10), False),  # more MACs
    ((0.9, 12), (0.8, 10), False),  # a trade-off: neither dominates
    ((0.8, 10), (0.9, 12), False),
    ((0.9, 10), (0.9, 10), False),  # equal points do not dominate each other
])
def test_dominates(a, b, expected):
    assert dominates(a, b) is expected


def test_dominates_is_irreflexive_and_asymmetric():
    grid = list(itertools.product((0.5, 0.7, 0.9), (5, 10, 20)))
    for a in grid:
        assert not dominates(a, a)
        for b in grid:
            assert not (dominates(a, b) and dominates(b, a))


def test_nondominated_ranks_with_ties_and_duplicates():
    points = [
        (0.90, 30),  # 0: best accuracy: front 0
        (0.80, 10),  # 1: fewest MACs: front 0
        (0.85, 20),  # 2: nothing has >= 0.85 accuracy at <= 20 MACs: front 0
        (0.80, 20),  # 3: dominated by 1 (same accuracy, fewer MACs) and by 2; front 1 once 0-2 go
        (0.70, 30),  # 4: dominated by 3 too: front 2
        (0.90, 30),  # 5: a duplicate of 0: equal points do not dominate, so front 0 as well
    ]
    assert nondominated_ranks(points) == [0, 0, 0, 1, 2, 0]


@pytest.mark.parametrize("points,expected", [
    ([], []),
    ([(0.5, 5)], [0]),
    ([(0.5, 5)] * 3, [0, 0, 0]),                         # all equal: one front
    ([(0.5, 50), (0.6, 40), (0.7, 30)], [2, 1, 0]),      # a chain: each dominated by the next
    ([(0.8, 10), (0.8, 20)], [0, 1]),                    # tie in accuracy, MACs decide
    ([(0.7, 10), (0.8, 10)], [1, 0]),                    # tie in MACs, accuracy decides
    ([(0.9, 40), (0.8, 30), (0.7, 20)], [0, 0, 0]),      # a pure trade-off
])
def test_nondominated_ranks_small_cases(points, expected):
    assert nondominated_ranks(points) == expected


# --------------------------------------------------------------------------- crowding


def test_crowding_boundary_points_are_infinite_and_interior_is_normalised_gap_sum():
    # A front of four: A (0.6, 10), B (0.7, 20), C (0.8, 40), D (0.9, 80).
    # accuracy: sorted A B C D, range 0.3: B gets (0.8 - 0.6) / 0.3 = 2/3, C gets (0.9 - 0.7) / 0.3 = 2/3
    # MACs:     sorted A B C D, range 70:  B gets (40 - 10) / 70 = 3/7,   C gets (80 - 20) / 70 = 6/7
    # so B = 2/3 + 3/7 = 23/21 and C = 2/3 + 6/7 = 32/21; A and D are boundaries.
    d = crowding_distances([(0.6, 10), (0.7, 20), (0.8, 40), (0.9, 80)])
    assert d[0] == INF and d[3] == INF
    assert d[1] == pytest.approx(23 / 21)
    assert d[2] == pytest.approx(32 / 21)


def test_crowding_boundaries_of_either_objective_are_infinite():
    # sorted by accuracy: P0 P1 P2 P3 P4 (range 0.4); by MACs: P1 P0 P2 P3 P4
    # (range 50). P1 is interior in accuracy but has the fewest MACs: a boundary.
    points = [(0.5, 20), (0.6, 10), (0.7, 30), (0.8, 40), (0.9, 60)]
    d = crowding_distances(points)
    assert d[0] == INF  # lowest accuracy
    assert d[1] == INF  # lowest MACs
    assert d[4] == INF  # highest accuracy and MACs
    # P2: accuracy (0.8 - 0.6) / 0.4 = 0.5; MACs neighbours 20 and 40: (40 - 20) / 50 = 0.4
    assert d[2] == pytest.approx(0.5 + 0.4)
    # P3: accuracy (0.9 - 0.7) / 0.4 = 0.5; MACs neighbours 30 and 60: (60 - 30) / 50 = 0.6
    assert d[3] == pytest.approx(0.5 + 0.6)


def test_crowding_constant_objective_and_small_sets():
    # MACs all equal: that objective adds nothing (no division by a zero range)
    assert crowding_distances([(0.5, 10), (0.6, 10), (0.7, 10)]) == [INF, pytest.approx(1.0), INF]
    assert crowding_distances([(0.5, 10)]) == [INF]
    assert crowding_distances([(0.5, 10), (0.6, 20)]) == [INF, INF]
    # a duplicate pair at one end: one of the two is the boundary, the other is
    # interior with gaps (0.7 - 0.5) / 0.2 = 1 and (30 - 10) / 20 = 1
    assert sorted(crowding_distances([(0.5, 10), (0.5, 10), (0.7, 30)])) == [pytest.approx(2.0), INF, INF]


# --------------------------------------------------------------------------- survivors

# Nine trials at a rung, worked out by hand.
A = (0.92, 40)  # best accuracy: front 0
B = (0.90, 30)  # front 0 (nothing at >= 0.90 with <= 30 MACs), but crowded, see below
C = (0.89, 14)  # front 0
D = (0.80, 10)  # fewest MACs: front 0
E = (0.91, 45)  # second-best accuracy, but A has more accuracy AND fewer MACs: front 1
F = (0.85, 30)  # dominated by B: front 1
G = (0.70, 12)  # dominated by D: front 1
I = (0.75, 35)  # dominated by F (and B): front 2
H = (0.60, 50)  # dominated by I: front 3
NINE = [E, B, H, C, F, D, G, I, A]  # D comes before A so index order would pick D, not A

# Front 0 is {A, B, C, D}. Crowding within it:
#   accuracy sorted D .80, C .89, B .90, A .92 (range .12):
#     C: (.90 - .80) / .12 = 0.833,  B: (.92 - .89) / .12 = 0.25
#   MACs sorted D 10, C 14, B 30, A 40 (range 30):
#     C: (30 - 10) / 30 = 0.667,     B: (40 - 14) / 30 = 0.867
#   so C = 1.5 > B = 1.117; A and D are boundaries (infinite).
# Among the infinite two, higher accuracy first: A, D. Then C, then B.
# Front 1 {E, F, G}: E and G are boundaries (E first, higher accuracy), F interior.
# Then I (front 2), H (front 3). Full order A D C B E G F I H.
# With eta = 3, 9 // 3 = 3 continue: A (best accuracy), D (cheapest) and C
# (the better spread of the two interior front points). B stops although it
# is on the front with the third-best accuracy; E stops although it has the
# second-best accuracy, because A dominates it.
IDX = {p: i for i, p in enumerate(NINE)}


def test_hand_made_selection_order():
    assert nondominated_ranks(NINE) == [1, 0, 3, 0, 1, 0, 1, 2, 0]
    front = [A, B, C, D]
    d = crowding_distances(front)
    assert d[0] == INF and d[3] == INF
    assert d[2] == pytest.approx(0.10 / 0.12 + 20 / 30)
    assert d[1] == pytest.approx(0.03 / 0.12 + 26 / 30)
    assert selection_order(NINE) == [IDX[p] for p in (A, D, C, B, E, G, F, I, H)]


@pytest.mark.parametrize("eta,kept", [
    (2, {A, D, C, B}),  # 9 // 2 = 4: the whole front
    (3, {A, D, C}),     # 9 // 3 = 3: see above
    (4, {A, D}),        # 2: the two boundaries of the front
    (5, {A}),           # 1: the boundaries tie on crowding; higher accuracy wins
    (20, {A}),          # 9 // 20 = 0, but at least one continues
])
def test_survivors_of_nine(eta, kept):
    assert survivors(NINE, eta) == {IDX[p] for p in kept}


def test_survivors_do_not_depend_on_input_order():
    rng = random.Random(0)
    for _ in range(20):
        points = NINE[:]
        rng.shuffle(points)
        assert {points[i] for i in survivors(points, 3)} == {A, C, D}


def _random_points(rng, n):
    # coarse values so that ties and duplicates happen
    return [(rng.choice([0.5, 0.6, 0.7, 0.8, 0.9]), rng.choice([10, 20, 30, 40])) for _ in range(n)]


def test_survivor_count_and_survivors_are_never_worse_than_the_rest():
    rng = random.Random(1)
    for n in range(1, 16):
        for eta in (2, 3, 4, 5):
            points = _random_points(rng, n)
            kept = survivors(points, eta)
            assert len(kept) == max(1, n // eta), (n, eta)
            assert kept <= set(range(n))
            ranks = nondominated_ranks(points)
            dropped = set(range(n)) - kept
            if dropped:
                # nobody who stops is on a better front than someone who continues
                assert max(ranks[i] for i in kept) <= min(ranks[i] for i in dropped)
            # whoever has the best accuracy among the fewest-MACs-at-that-accuracy continues
            best = max(range(n), key=lambda i: (points[i][0], -points[i][1]))
            assert points[best] in {points[i] for i in kept}


def test_single_trial_always_continues():
    for eta in (2, 3, 10):
        assert survivors([(0.1, 1e12)], eta) == {0}
        assert continues((0.1, 1e12), [], eta)


@pytest.mark.parametrize("eta", [1, 0, -3])
def test_eta_below_two_is_refused(eta):
    with pytest.raises(ValueError, match="eta"):
        survivors(NINE, eta)
    with pytest.raises(ValueError, match="eta"):
        continues(A, NINE, eta)


# --------------------------------------------------------------------------- continues


def _others(point):
    rest = NINE[:]
    rest.remove(point)
    return rest


@pytest.mark.parametrize("point,expected", [
    (A, True),   # on the front with the best accuracy
    (D, True),   # on the front with the fewest MACs
    (C, True),   # on the front, the less crowded interior point
    (B, False),  # on the front but crowded out
    (E, False),  # dominated (by A) despite the second-best accuracy
    (F, False),
    (H, False),  # dominated by nearly everyone
])
def test_continues_against_the_other_eight(point, expected):
    assert continues(point, _others(point), 3) is expected


def test_continues_with_few_reports_so_far():
    # The bare ranking (min_peers=0), as the rule judged before it had a
    # minimum: one other trial at the rung, eta = 3: max(1, 2 // 3) = 1 continues
    assert not continues((0.5, 20), [(0.6, 10)], 3, min_peers=0)  # dominated: stops
    assert continues((0.6, 10), [(0.5, 20)], 3, min_peers=0)      # dominates: continues
    # a two-point front: both are boundaries, the more accurate one continues
    assert continues((0.7, 20), [(0.6, 10)], 3, min_peers=0)
    assert not continues((0.6, 10), [(0.7, 20)], 3, min_peers=0)
    # with eta = 2 and four reports, two continue: the cheap one now goes on too
    assert continues((0.6, 10), [(0.7, 20), (0.5, 30), (0.4, 40)], 2, min_peers=0)
    assert not continues((0.5, 30), [(0.7, 20), (0.6, 10), (0.4, 40)], 2, min_peers=0)
    # By default nobody is stopped on so few peers (minimum_peers(eta) = 2 eta
    # others must have reached the rung): the stops above no longer happen.
    assert continues((0.5, 20), [(0.6, 10)], 3)
    assert continues((0.6, 10), [(0.7, 20)], 3)
    assert continues((0.5, 30), [(0.7, 20), (0.6, 10), (0.4, 40)], 2)


# --------------------------------------------------------------------------- enough peers


def test_minimum_peers_is_twice_eta():
    assert MIN_PEERS_PER_ETA == 2  # chosen by benchmarks/halving_peers.py, see nas/halving.py
    assert [minimum_peers(eta) for eta in (2, 3, 4)] == [4, 6, 8]
    with pytest.raises(ValueError, match="eta"):
        minimum_peers(1)
    with pytest.raises(ValueError, match="min_peers"):
        continues(A, NINE, 3, min_peers=-1)


@pytest.mark.parametrize("eta", [2, 3, 4])
def test_judged_only_with_the_minimum_of_peers(eta):
    need = minimum_peers(eta)
    worst = (0.1, 1000)  # dominated by every peer below
    peers = [(0.5 + 0.01 * i, 10 + i) for i in range(need)]
    for n in range(need):
        assert continues(worst, peers[:n], eta)  # too few peers: goes on
    assert not continues(worst, peers, eta)      # the minimum reached: judged, and stopped
    # with the minimum, the verdict is the bare ranking's
    assert continues(worst, peers, eta) == (0 in survivors([worst, *peers], eta))


def test_an_interior_trade_off_point_is_not_stopped_on_a_few_peers():
    # The case: a Pareto-optimal trade-off point that reaches the rung
    # after the two ends of the front, eta 3. The bare ranking stops it against
    # 2-7 peers: one survivor (the most accurate) up to 5 peers, then the two
    # infinite-crowding ends; with 8 peers 3 survive and it goes on.
    ends = [(0.90, 40), (0.60, 10)]
    middle = (0.80, 20)  # on the front: nothing is as accurate at <= 20 MACs
    fillers = [(0.50 - 0.01 * i, 30 + i) for i in range(6)]  # dominated by everything
    for n in range(0, 7):
        others = ends + fillers[:n]
        assert nondominated_ranks([middle, *others])[0] == 0
        assert continues(middle, others, 3, min_peers=0) is (len(others) >= 8), len(others)
    # Now it goes on until 6 others reached the rung. Against 6 or 7 it is still
    # stopped (only the ends survive): a minimum of 2 eta is a compromise, the
    # one benchmarks/halving_peers.py chose over 3 eta (see nas/halving.py).
    verdicts = {len(ends) + n: continues(middle, ends + fillers[:n], 3) for n in range(0, 7)}
    assert verdicts == {2: True, 3: True, 4: True, 5: True, 6: False, 7: False, 8: True}


def _random_stream(rng, n, k):
    return [(rng.choice([0.5, 0.6, 0.7, 0.8, 0.9]), *(rng.choice([10, 20, 30, 40]) for _ in range(k - 1)))
            for _ in range(n)]


@pytest.mark.parametrize("k", [2, 3])
def test_no_pareto_optimal_trial_stopped_with_fewer_than_the_minimum(k):
    # property-style: random studies, random arrival orders; each trial is
    # judged against the ones that reached the rung before it
    rng = random.Random(k)
    for _ in range(200):
        eta = rng.choice([2, 3, 4])
        points = _random_stream(rng, rng.randint(1, 4 * eta), k)
        rng.shuffle(points)
        front = {p for p, r in zip(points, nondominated_ranks(points)) if r == 0}
        for i, point in enumerate(points):
            verdict = continues(point, points[:i], eta)
            if i < minimum_peers(eta):
                assert verdict, (eta, i, point)
            else:
                assert verdict == continues(point, points[:i], eta, min_peers=0)
            if point in front and i < minimum_peers(eta):
                assert verdict


# --------------------------------------------------------------------------- who is a peer


def _fake_objective(others, objectives=("accuracy", "macs")):
    """What Objective._rung_points reads: the space's objectives and the other trials."""
    return SimpleNamespace(space=SimpleNamespace(objectives=list(objectives)), _others=lambda trial: others)


def _stored(accuracy, macs, params=1000, **attrs):
    return SimpleNamespace(user_attrs={"rungs": [[1.0, accuracy]], "macs": macs, "params": params, **attrs})


def test_the_baseline_is_not_a_peer():
    from nas.search.objective import Objective

    eta = 3
    need = minimum_peers(eta)
    baseline = _stored(0.70, 5, baseline=True)  # cheapest, trained to the end
    others = [_stored(0.80 + 0.01 * i, 20 + i) for i in range(need - 1)]
    copy = _stored(0.99, 1, duplicate_of=3)  # a copy of another trial's result: not a peer either
    not_there = SimpleNamespace(user_attrs={"rungs": [], "macs": 1, "params": 1})  # has not reached the rung
    fake = _fake_objective([baseline, *others, copy, not_there])
    peers = Objective._rung_points(fake, None, 0)
    assert sorted(peers) == sorted((t.user_attrs["rungs"][0][1], t.user_attrs["macs"]) for t in others)
    # a trial dominated by every one of them still goes on: baseline + (minimum - 1) others are too few
    point = (0.50, 60)
    assert continues(point, peers, eta)
    # had the baseline counted, it would have been judged, and stopped
    assert not continues(point, [*peers, (0.70, 5)], eta)


def test_rung_points_carry_every_cost_objective():
    from nas.search.objective import Objective

    trials = [_stored(0.8, 20, 300), _stored(0.7, 10, 500, latency_ms=2.5)]
    assert Objective._rung_points(_fake_objective(trials, ("accuracy", "macs", "params")), None, 0) == [
        (0.8, 20, 300), (0.7, 10, 500)]
    # latency: only the trial that has one (a trial without it is not comparable)
    assert Objective._rung_points(_fake_objective(trials, ("accuracy", "latency")), None, 0) == [(0.7, 2.5)]


# --------------------------------------------------------------------------- k objectives


@pytest.mark.parametrize("a,b,expected", [
    ((0.9, 10, 5), (0.9, 10, 6), True),    # better in the third only
    ((0.9, 10, 6), (0.9, 10, 5), False),
    ((0.9, 10, 6), (0.8, 12, 5), False),   # a trade-off in the third
    ((0.9, 10, 5), (0.9, 10, 5), False),
    ((0.9, 10, 5, 1), (0.8, 10, 5, 1), True),  # four objectives
])
def test_dominates_with_more_costs(a, b, expected):
    assert dominates(a, b) is expected


def test_points_of_different_lengths_are_refused():
    with pytest.raises(ValueError, match="lengths"):
        dominates((0.9, 10), (0.9, 10, 5))
    with pytest.raises(ValueError, match="lengths"):
        continues((0.9, 10, 5), [(0.8, 10)] * 10, 3)
    with pytest.raises(ValueError, match="cost"):
        nondominated_ranks([(0.9,), (0.8,)])


def test_three_objective_ranks_and_crowding():
    points = [(0.9, 30, 30), (0.8, 10, 40), (0.7, 20, 10), (0.6, 30, 40)]
    # the first three trade off; the last is dominated by each of them
    assert nondominated_ranks(points) == [0, 0, 0, 1]
    # within the front of three every point is a boundary of some objective
    assert crowding_distances(points[:3]) == [INF, INF, INF]
    # five points on a front: the interior sum runs over all three objectives
    front = [(0.5, 10, 50), (0.6, 20, 40), (0.7, 30, 30), (0.8, 40, 20), (0.9, 50, 10)]
    d = crowding_distances(front)
    assert d[0] == d[4] == INF
    assert d[1:4] == [pytest.approx(3 * 0.5)] * 3  # each gap (2 steps of 4) in each of 3 objectives


def test_third_objective_changes_the_verdict():
    # P is dominated in (accuracy, MACs) by every other trial, but has the
    # fewest params by far: with 3 objectives it is on the front (a boundary,
    # infinite crowding) and continues; judged on 2 it is last and stops.
    eta = 3
    Q = (0.85, 15, 5)
    rs = [(0.84 - 0.001 * i, 16 + 0.1 * i, 6 + i) for i in range(minimum_peers(eta))]  # Q dominates them in 3
    P = (0.80, 20, 1)
    others3 = [Q, *rs]
    others2 = [p[:2] for p in others3]
    assert all(dominates(o, P[:2]) for o in others2)
    assert nondominated_ranks([P, *others3])[:2] == [0, 0]
    assert continues(P, others3, eta)
    assert not continues(P[:2], others2, eta)


def test_two_objective_points_rank_as_before():
    # a 2-tuple's verdict is the one it had: the hand-made nine, eta 3
    assert survivors(NINE, 3) == {IDX[p] for p in (A, D, C)}
    assert [continues(p, _others(p), 3) for p in NINE] == [p in (A, C, D) for p in NINE]
    # a constant third cost changes no front (crowding is another matter: as
    # NSGA-II does, the first and last point of a constant objective's sort are
    # its boundaries, infinite)
    three = [(*p, 1.0) for p in NINE]
    assert nondominated_ranks(three) == nondominated_ranks(NINE)
