"""The pure draw algorithm (bot.lottery_draw): determinism, fairness, redraw continuation and verification.

No database here. The chi-square tests are deterministic (seeds derived from a fixed master seed), so they
cannot flake: they either pass for this algorithm or fail for every run.
"""

from __future__ import annotations

import ast
import hashlib
import random
import re

import pytest

from bot import lottery_draw
from bot.lottery_draw import Stream, Win, canonical_entrants, draw, entrants_hash, picks, verify

MASTER = b"qunbot lottery chi-square master seed"
# Critical values of the chi-square distribution at p = 0.001 (standard tables).
CHI2_CRIT_P001 = {19: 43.820}


def seed_number(n: int) -> bytes:
    return hashlib.sha256(MASTER + n.to_bytes(8, "big")).digest()


def chi_square(counts: list[int], expected: float) -> float:
    return sum((c - expected) ** 2 / expected for c in counts)


ENTRANTS = [f"user{n:02d}" for n in range(20)]
PRIZES = [("一等奖", 1), ("二等奖", 2)]
DRAWS = 20_000


def test_win_counts_and_positions_show_no_bias():
    index = {u: n for n, u in enumerate(canonical_entrants(ENTRANTS))}
    wins = [0] * len(ENTRANTS)
    by_position = [[0] * len(ENTRANTS) for _ in range(3)]
    for d in range(DRAWS):
        result = draw(seed_number(d), ENTRANTS, PRIZES)
        assert len({w.user for w in result.wins}) == 3
        for w in result.wins:
            wins[index[w.user]] += 1
            by_position[w.pick][index[w.user]] += 1
    critical = CHI2_CRIT_P001[len(ENTRANTS) - 1]
    assert chi_square(wins, DRAWS * 3 / len(ENTRANTS)) < critical
    for counts in by_position:
        assert chi_square(counts, DRAWS / len(ENTRANTS)) < critical


def test_the_chi_square_check_catches_a_modulo_biased_draw():
    """Not vacuous: a 7-bit random number taken modulo 20 (the classic mistake) fails the same check."""
    counts = [0] * 20
    for d in range(DRAWS):
        counts[(seed_number(d)[0] & 0x7F) % 20] += 1
    assert chi_square(counts, DRAWS / 20) > CHI2_CRIT_P001[19]


def test_commitment_is_sha256_of_the_raw_seed_bytes():
    seed = lottery_draw.new_seed()
    assert len(seed) == 32 and seed != lottery_draw.new_seed()
    assert lottery_draw.commitment_of(seed) == hashlib.sha256(seed).hexdigest()
    assert lottery_draw.commitment_of(seed) != hashlib.sha256(seed.hex().encode()).hexdigest()


def test_entrant_list_is_sorted_by_utf8_bytes_and_joined_with_newlines():
    ids = ["中文", "b", "Z", "a", "é", "😀"]
    ordered = canonical_entrants(ids)
    assert [u.encode() for u in ordered] == sorted(u.encode() for u in ids)
    assert entrants_hash(ordered) == hashlib.sha256("\n".join(ordered).encode()).hexdigest()
    for bad in (["a", "a"], ["a", ""], ["a\nb"]):
        with pytest.raises(ValueError):
            canonical_entrants(bad)


def test_the_draw_depends_only_on_the_seed_and_the_set_of_entrants():
    seed = seed_number(1)
    shuffled = ENTRANTS[:]
    random.Random(7).shuffle(shuffled)
    assert draw(seed, ENTRANTS, PRIZES) == draw(seed, shuffled, PRIZES)
    # Another seed gives other winners (for some of a handful of seeds, surely).
    first = draw(seed, ENTRANTS, PRIZES).wins
    assert any(draw(seed_number(n), ENTRANTS, PRIZES).wins != first for n in range(2, 6))


def test_prizes_take_picks_in_order_and_fewer_entrants_leave_slots_empty():
    result = draw(seed_number(2), ["u1", "u2"], [("一等奖", 1), ("二等奖", 3)])
    assert [(w.pick, w.prize, w.slot) for w in result.wins] == [(0, "一等奖", 0), (1, "二等奖", 0)]
    assert {w.user for w in result.wins} == {"u1", "u2"}
    empty = draw(seed_number(2), [], [("一等奖", 1)])
    assert empty.wins == [] and empty.entrants_hash == hashlib.sha256(b"").hexdigest()


def test_a_redraw_continues_the_same_shuffle_and_never_repeats_a_winner():
    seed = seed_number(3)
    ordered = canonical_entrants(ENTRANTS)
    first = picks(seed, ordered, 3)
    extended = picks(seed, ordered, 6)
    assert extended[:3] == first
    assert len(set(extended)) == 6
    # Every entrant is picked exactly once if the shuffle runs to the end.
    assert sorted(picks(seed, ordered, 100)) == ordered


def test_index_below_skips_blocks_above_the_last_full_multiple(monkeypatch):
    blocks = iter([2**256 - 1, 2**256 - 2, 7])  # for m = 3 the limit is 2**256 - 1: the first is skipped
    monkeypatch.setattr(lottery_draw, "block", lambda seed, counter: next(blocks))
    stream = Stream(bytes(32))
    assert stream.index_below(3) == (2**256 - 2) % 3
    assert stream.counter == 2
    assert stream.index_below(3) == 7 % 3 and stream.counter == 3


def test_verify_accepts_the_draw_and_names_each_difference():
    seed = seed_number(4)
    result = draw(seed, ENTRANTS, PRIZES)
    base = {"seed_hex": seed.hex(), "commitment": result.commitment, "entrants": ENTRANTS,
            "published_entrants_hash": result.entrants_hash, "prizes": PRIZES, "wins": result.wins}
    assert verify(**base) == []

    other_seed = seed_number(5)
    [problem, *_] = verify(**{**base, "seed_hex": other_seed.hex()})
    assert problem.startswith("commitment mismatch")

    problems = verify(**{**base, "entrants": [*ENTRANTS, "late_joiner"]})
    assert problems[0].startswith("entrant list hash mismatch: stored list (21 entrants)")

    swapped = list(result.wins)
    outsider = next(u for u in ENTRANTS if u not in {w.user for w in swapped})
    swapped[1] = Win(1, swapped[1].prize, swapped[1].slot, outsider)
    assert verify(**{**base, "wins": swapped}) == [
        f"pick 1 ({swapped[1].prize} #{swapped[1].slot + 1}): recorded {outsider}, recomputed {result.wins[1].user}"]


def test_verify_checks_redraws_against_forfeited_winners():
    seed = seed_number(6)
    result = draw(seed, ENTRANTS, PRIZES)
    next_pick = picks(seed, canonical_entrants(ENTRANTS), 4)[3]
    forfeited = [Win(w.pick, w.prize, w.slot, w.user, forfeited=w.pick == 1) for w in result.wins]
    redraw = Win(3, forfeited[1].prize, forfeited[1].slot, next_pick, replaces_pick=1)
    base = {"seed_hex": seed.hex(), "commitment": result.commitment, "entrants": ENTRANTS,
            "published_entrants_hash": result.entrants_hash, "prizes": PRIZES}
    assert verify(**base, wins=[*forfeited, redraw]) == []
    # A redraw whose predecessor was never forfeited is an over-issue, and is reported.
    assert verify(**base, wins=[*result.wins, redraw]) == [
        f"pick 3 (redraw): does not replace a forfeited winner of {redraw.prize} #{redraw.slot + 1}"]


def test_the_readme_recipe_runs_and_agrees_with_its_worked_example_and_the_bot():
    """The README's recipe script, run as written, prints the worked example's output, which is the bot's."""
    import subprocess
    import sys
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Recipe: check a draw with your own script", 1)[1]
    script = section.split("```python\n", 1)[1].split("```", 1)[0]
    expected = section.split("```text\n", 1)[1].split("```", 1)[0]
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True)
    assert run.stdout == expected

    seed = bytes.fromhex(re.search(r'SEED = "([0-9a-f]{64})"', script).group(1))
    ids = ast.literal_eval(re.search(r"ENTRANTS = (\[.*?\])", script).group(1))
    result = draw(seed, ids, [("一等奖", 1), ("二等奖", 2)])
    assert expected.splitlines() == [
        f"commitment {result.commitment}", f"entrants   {result.entrants_hash}",
        *(f"pick {n} {user}" for n, user in enumerate(picks(seed, canonical_entrants(ids), 4)))]
    assert [w.user for w in result.wins] == [line.split()[-1] for line in expected.splitlines()[2:5]]
