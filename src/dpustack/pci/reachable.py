"""Whether a regular expression can match any string of a small fixed format (a PCI address, a hex id).

Device-spec values are regular expressions; one that can never match a real
address or id is a typo, and the agent refuses it at start instead of
offering nothing. The check walks the parsed expression over a small
automaton of the format, tracking which automaton states each piece can
reach. Constructs it cannot follow exactly (look-arounds, anchors, atomic
groups) are treated generously, so the answer "cannot match" is always
right and "can match" may be optimistic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from re import _constants as c  # type: ignore[attr-defined]  # the stdlib's own parser, stable since 3.11
from re import _parser as sre  # type: ignore[attr-defined]
from typing import Any

HEX = "0123456789abcdef"
_MAX_UNROLL = 64  # a repeat with a larger minimum is not followed: "can match" is assumed


class _Unknown(Exception):
    """The expression uses something the walk does not follow (a back-reference)."""


@dataclass(frozen=True)
class Format:
    """Strings made of segments, each `low`..`high` characters from one character set."""

    segments: tuple[tuple[frozenset[str], int, int], ...]

    @property
    def alphabet(self) -> frozenset[str]:
        return frozenset().union(*(chars for chars, _, _ in self.segments))

    def start(self) -> frozenset[tuple[int, int]]:
        return self._settle({(0, 0)})

    def step(self, state: tuple[int, int], char: str) -> set[tuple[int, int]]:
        index, count = state
        if index == len(self.segments):
            return set()
        chars, _, high = self.segments[index]
        if char not in chars or count == high:
            return set()
        return self._settle({(index, count + 1)})

    def accepting(self, state: tuple[int, int]) -> bool:
        return state[0] == len(self.segments)

    def _settle(self, states: set[tuple[int, int]]) -> frozenset[tuple[int, int]]:
        """Add the states reached by closing segments that have their minimum length."""
        out = set(states)
        todo = list(states)
        while todo:
            index, count = todo.pop()
            if index < len(self.segments) and count >= self.segments[index][1]:
                nxt = (index + 1, 0)
                if nxt not in out:
                    out.add(nxt)
                    todo.append(nxt)
        return frozenset(out)


def segment(chars: str, low: int, high: int | None = None) -> tuple[frozenset[str], int, int]:
    return (frozenset(chars), low, low if high is None else high)


# What dpustack stores: lower-case canonical addresses (domains of 4 to 8 digits) and ids.
ADDRESS = Format((segment(HEX, 4, 8), segment(":", 1), segment(HEX, 2), segment(":", 1),
                  segment("01", 1), segment(HEX, 1), segment(".", 1), segment("01234567", 1)))


def hex_id(width: int) -> Format:
    return Format((segment(HEX, width),))


def can_match(pattern: re.Pattern[str], fmt: Format) -> bool:
    """False only when no string of `fmt` fully matches `pattern`."""
    try:
        parsed = sre.parse(pattern.pattern, pattern.flags)
        reached = _walk(list(parsed), fmt.start(), fmt, bool(pattern.flags & re.IGNORECASE))
    except (_Unknown, re.error, RecursionError):
        return True
    return any(fmt.accepting(state) for state in reached)


def _walk(items: list[tuple[Any, Any]], states: frozenset, fmt: Format, icase: bool) -> frozenset:
    for op, arg in items:
        if not states:
            return states
        states = _one(op, arg, states, fmt, icase)
    return states


def _one(op: Any, arg: Any, states: frozenset, fmt: Format, icase: bool) -> frozenset:
    if op in (c.LITERAL, c.NOT_LITERAL, c.ANY, c.IN):
        chars = {ch for ch in fmt.alphabet if _atom(op, arg, ch, icase)}
        return frozenset(t for s in states for ch in chars for t in fmt.step(s, ch))
    if op == c.BRANCH:
        return frozenset().union(*(_walk(list(alt), states, fmt, icase) for alt in arg[1]))
    if op == c.SUBPATTERN:
        _, add, remove, sub = arg
        inner = (icase or bool(add & re.IGNORECASE)) and not remove & re.IGNORECASE
        return _walk(list(sub), states, fmt, inner)
    if op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT):
        return _repeat(arg, states, fmt, icase)
    if op == c.ATOMIC_GROUP:
        return _walk(list(arg), states, fmt, icase)
    if op in (c.AT, c.ASSERT, c.ASSERT_NOT):
        return states  # zero-width: passing them through can only over-approximate
    raise _Unknown(op)


def _repeat(arg: Any, states: frozenset, fmt: Format, icase: bool) -> frozenset:
    low, high, sub = arg
    if low > _MAX_UNROLL:
        raise _Unknown("repeat")
    for _ in range(low):
        states = _walk(list(sub), states, fmt, icase)
    reached = states
    extra = (high - low) if high != c.MAXREPEAT else None
    while extra is None or extra > 0:
        grown = states | _walk(list(sub), reached, fmt, icase)
        if grown == reached:
            break
        reached = grown
        if extra is not None:
            extra -= 1
    return reached


def _atom(op: Any, arg: Any, char: str, icase: bool) -> bool:
    candidates = {char, char.swapcase()} if icase else {char}
    return any(_atom_exact(op, arg, ch) for ch in candidates)


def _atom_exact(op: Any, arg: Any, char: str) -> bool:
    code = ord(char)
    if op == c.LITERAL:
        return code == arg
    if op == c.NOT_LITERAL:
        return code != arg
    if op == c.ANY:
        return char != "\n"
    negate = bool(arg) and arg[0][0] == c.NEGATE
    hit = any(_set_item(item_op, item_arg, char) for item_op, item_arg in arg if item_op != c.NEGATE)
    return hit != negate


def _set_item(op: Any, arg: Any, char: str) -> bool:
    code = ord(char)
    if op == c.LITERAL:
        return code == arg
    if op == c.RANGE:
        return arg[0] <= code <= arg[1]
    if op == c.CATEGORY:
        return _CATEGORIES.get(arg, lambda _: True)(char)
    return True  # anything else in a set: assume it matches (generous)


_CATEGORIES = {
    c.CATEGORY_DIGIT: str.isdigit, c.CATEGORY_NOT_DIGIT: lambda ch: not ch.isdigit(),
    c.CATEGORY_WORD: lambda ch: ch.isalnum() or ch == "_",
    c.CATEGORY_NOT_WORD: lambda ch: not (ch.isalnum() or ch == "_"),
    c.CATEGORY_SPACE: str.isspace, c.CATEGORY_NOT_SPACE: lambda ch: not ch.isspace(),
}
