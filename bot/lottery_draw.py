"""The lottery draw: a deterministic, published algorithm anyone can re-run from the seed and the entrant list.

Why it is built this way: members must be able to check a draw with a few lines of their own code, so
every step is a plain hash operation with no library randomness, no floating point and no modulo bias.
The README section "Verifiable lotteries" states the same recipe; tests keep the two in sync.

1. At creation the bot takes a secret seed of 32 random bytes and publishes its commitment:
   ``SHA-256(seed)`` over the 32 raw bytes (not over their hex spelling), as lowercase hex.
2. At the draw the entrant list is frozen: the entrants' platform user ids, sorted by their UTF-8 bytes,
   joined with a single ``\\n`` (no trailing newline). Its SHA-256 (hex) is published with the seed.
3. Random numbers: block ``k`` (k = 0, 1, 2, …, one counter for the whole lottery) is
   ``SHA-256(seed || b"qunbot-lottery" || k as 8-byte big-endian)`` read as a 256-bit big-endian integer.
   An index below ``m`` takes the next block ``x``; if ``x < 2**256 - (2**256 mod m)`` the index is
   ``x mod m``, otherwise the block is skipped and the next one is tried (rejection sampling, no bias).
4. Picks: a partial Fisher–Yates shuffle of the sorted list: for pick i = 0, 1, 2, …:
   ``j = i + index_below(n - i)``, swap positions i and j, and pick i is the entrant now at position i.
5. Prizes in their listed order, each slot 0 … stock-1 of a prize in turn, take picks 0, 1, 2, … (fewer
   entrants than slots: the last slots stay empty). A redraw for a forfeited prize takes the next pick of
   the same shuffle, so it never picks anyone picked before and is verifiable the same way.

No I/O and no database here: the storage layer feeds in the rows and records what comes out.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

DOMAIN = b"qunbot-lottery"
SEED_BYTES = 32
_SPACE = 1 << 256


def new_seed() -> bytes:
    """A fresh secret seed (32 bytes from the operating system's CSPRNG)."""
    return secrets.token_bytes(SEED_BYTES)


def commitment_of(seed: bytes) -> str:
    """The published commitment: SHA-256 of the 32 raw seed bytes, lowercase hex."""
    return hashlib.sha256(seed).hexdigest()


def canonical_entrants(entrants: Iterable[str]) -> list[str]:
    """The frozen list's order: sorted by UTF-8 bytes; an id must be non-empty, unique and without newlines."""
    ordered = sorted(entrants, key=lambda user: user.encode("utf-8"))
    for n, user in enumerate(ordered):
        if not user or "\n" in user:
            raise ValueError(f"entrant id {user!r} is empty or contains a newline")
        if n and ordered[n - 1] == user:
            raise ValueError(f"entrant id {user!r} appears twice")
    return ordered


def entrant_list_bytes(ordered: Sequence[str]) -> bytes:
    """The exact bytes that are hashed: sorted ids joined with one newline, UTF-8, no trailing newline."""
    return "\n".join(ordered).encode("utf-8")


def entrants_hash(ordered: Sequence[str]) -> str:
    """SHA-256 (hex) of the frozen, sorted entrant list."""
    return hashlib.sha256(entrant_list_bytes(ordered)).hexdigest()


def block(seed: bytes, counter: int) -> int:
    """Block `counter` of the seed's stream as a 256-bit integer."""
    digest = hashlib.sha256(seed + DOMAIN + counter.to_bytes(8, "big")).digest()
    return int.from_bytes(digest, "big")


class Stream:
    """Unbiased indexes from the seed's block stream; `counter` is the next block to read."""

    def __init__(self, seed: bytes) -> None:
        if len(seed) != SEED_BYTES:
            raise ValueError(f"a seed is {SEED_BYTES} bytes, got {len(seed)}")
        self.seed = seed
        self.counter = 0

    def index_below(self, m: int) -> int:
        """A uniform index in [0, m): blocks at or above the largest multiple of m are skipped."""
        if m < 1:
            raise ValueError("index_below needs m >= 1")
        limit = _SPACE - _SPACE % m
        while True:
            x = block(self.seed, self.counter)
            self.counter += 1
            if x < limit:
                return x % m


def picks(seed: bytes, ordered: Sequence[str], count: int) -> list[str]:
    """The first `count` picks of the partial Fisher–Yates shuffle of the sorted list (at most all of it)."""
    pool = list(ordered)
    stream = Stream(seed)
    n = len(pool)
    chosen = []
    for i in range(min(count, n)):
        j = i + stream.index_below(n - i)
        pool[i], pool[j] = pool[j], pool[i]
        chosen.append(pool[i])
    return chosen


def prize_slots(prizes: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
    """(prize name, slot) in the order picks fill them: prizes as listed, slots 0 … stock-1 in turn."""
    return [(name, slot) for name, stock in prizes for slot in range(stock)]


@dataclass(frozen=True)
class Win:
    """One recorded winner: the pick that chose them, the prize slot, and for a redraw whom they replace."""

    pick: int
    prize: str
    slot: int
    user: str
    replaces_pick: int | None = None
    forfeited: bool = False


@dataclass(frozen=True)
class Result:
    """What an initial draw publishes."""

    commitment: str
    entrants_hash: str
    entrant_count: int
    wins: list[Win]


def draw(seed: bytes, entrants: Iterable[str], prizes: Sequence[tuple[str, int]]) -> Result:
    """The initial draw: every prize slot in order takes the next pick (while entrants last)."""
    ordered = canonical_entrants(entrants)
    slots = prize_slots(prizes)
    chosen = picks(seed, ordered, len(slots))
    wins = [Win(n, prize, slot, user) for n, ((prize, slot), user) in enumerate(zip(slots, chosen, strict=False))]
    return Result(commitment_of(seed), entrants_hash(ordered), len(ordered), wins)


def verify(*, seed_hex: str, commitment: str, entrants: Iterable[str], published_entrants_hash: str,
           prizes: Sequence[tuple[str, int]], wins: Sequence[Win]) -> list[str]:
    """Recompute a lottery from its published seed and the stored entrant list; [] if everything matches.

    Each problem says exactly what differs: the commitment, the list hash, or a winner (pick, prize, slot).
    """
    problems: list[str] = []
    try:
        seed = bytes.fromhex(seed_hex)
    except ValueError:
        return [f"seed {seed_hex!r} is not hex"]
    if len(seed) != SEED_BYTES:
        return [f"seed is {len(seed)} bytes, expected {SEED_BYTES}"]
    if commitment_of(seed) != commitment:
        problems.append(f"commitment mismatch: SHA-256(seed) = {commitment_of(seed)}, published {commitment}")
    try:
        ordered = canonical_entrants(entrants)
    except ValueError as exc:
        return [*problems, f"entrant list invalid: {exc}"]
    actual_hash = entrants_hash(ordered)
    if actual_hash != published_entrants_hash:
        problems.append(f"entrant list hash mismatch: stored list ({len(ordered)} entrants) hashes to "
                        f"{actual_hash}, published {published_entrants_hash}")
    by_pick = {w.pick: w for w in wins}
    if sorted(by_pick) != list(range(len(wins))):
        problems.append(f"picks are not numbered 0..{len(wins) - 1}: {sorted(w.pick for w in wins)}")
    expected_users = picks(seed, ordered, len(wins))
    slots = prize_slots(prizes)
    initial = min(len(slots), len(ordered))
    replaced_already: set[int] = set()
    for pick in sorted(by_pick):
        win = by_pick[pick]
        expected_user = expected_users[pick] if pick < len(expected_users) else None
        if win.user != expected_user:
            problems.append(f"pick {pick} ({win.prize} #{win.slot + 1}): recorded {win.user}, "
                            f"recomputed {expected_user if expected_user is not None else '(no entrant left)'}")
        if pick < initial:
            expected_slot = slots[pick]
            if (win.prize, win.slot) != expected_slot or win.replaces_pick is not None:
                problems.append(f"pick {pick}: recorded for {win.prize} #{win.slot + 1}, the draw gives it "
                                f"{expected_slot[0]} #{expected_slot[1] + 1}")
            continue
        replaced = by_pick.get(win.replaces_pick) if win.replaces_pick is not None else None
        if replaced is None or not replaced.forfeited or (replaced.prize, replaced.slot) != (win.prize, win.slot) \
                or replaced.pick in replaced_already:
            problems.append(f"pick {pick} (redraw): does not replace a forfeited winner of {win.prize} #{win.slot + 1}")
        else:
            replaced_already.add(replaced.pick)
    return problems
