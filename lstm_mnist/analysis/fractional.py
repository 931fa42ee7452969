"""Two-level (fractional) factorial designs: which runs, and which effects share an alias chain. Pure.

Factors are letters A, B, C, ... in the order a grid file lists them; each run sets every factor to -1
(off) or +1 (on). A 2^(k-p) design is the full 2^(k-p) design in the first k-p letters; each further
letter is the product of a generator word. An effect is a set of letters (a product of columns); two
effects are aliases when their product is a word of the defining relation, so the design cannot tell
them apart. Generators are positive, so the all-on run (`full`) is always in the fraction.

Generators: the minimum-aberration fractions of the NIST/SEMATECH e-Handbook of Statistical Methods,
section 5.3.3.4.7 ("Summary tables of useful fractional factorial designs"), which agree with
Montgomery, *Design and Analysis of Experiments*, Table 8.14. Checked in ../shared/docs/factorial.md
and by tests/test_factorial.py (resolution and alias chains computed from the words).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cached_property

from ..config import ConfigError

LETTERS = "ABCDEFG"
MIN_FACTORS, MAX_FACTORS = 2, len(LETTERS)
ROMAN = {3: "III", 4: "IV", 5: "V", 6: "VI", 7: "VII"}

# (k factors, p) -> the generator words of the last p letters, in letter order.
GENERATORS: dict[tuple[int, int], tuple[str, ...]] = {
    (3, 1): ("AB",),                                  # 2^(3-1)  III   C = AB
    (4, 1): ("ABC",),                                 # 2^(4-1)  IV    D = ABC
    (5, 1): ("ABCD",),                                # 2^(5-1)  V     E = ABCD
    (5, 2): ("AB", "AC"),                             # 2^(5-2)  III   D = AB, E = AC
    (6, 1): ("ABCDE",),                               # 2^(6-1)  VI    F = ABCDE
    (6, 2): ("ABC", "BCD"),                           # 2^(6-2)  IV    E = ABC, F = BCD
    (6, 3): ("AB", "AC", "BC"),                       # 2^(6-3)  III   D = AB, E = AC, F = BC
    (7, 1): ("ABCDEF",),                              # 2^(7-1)  VII   G = ABCDEF
    (7, 2): ("ABCD", "ABDE"),                         # 2^(7-2)  IV    F = ABCD, G = ABDE
    (7, 3): ("ABC", "BCD", "ACD"),                    # 2^(7-3)  IV    E = ABC, F = BCD, G = ACD
    (7, 4): ("AB", "AC", "BC", "ABC"),                # 2^(7-4)  III   D = AB, E = AC, F = BC, G = ABC
}

Word = frozenset  # a product of factor columns, as the set of its letters


def word(text: str) -> Word:
    return frozenset(text)


def spell(w: Word) -> str:
    return "".join(sorted(w)) or "I"


@dataclass(frozen=True)
class Design:
    """A 2^(k-p) design over named factors (p = 0: the full factorial)."""
    factors: tuple[str, ...]           # factor names, in letter order A, B, C, ...
    generators: tuple[str, ...] = ()   # the words of the last p letters, e.g. ("ABC", "BCD")

    @property
    def k(self) -> int:
        return len(self.factors)

    @property
    def p(self) -> int:
        return len(self.generators)

    @property
    def runs(self) -> int:
        """Runs per seed (replicate)."""
        return 2 ** (self.k - self.p)

    @property
    def letters(self) -> str:
        return LETTERS[:self.k]

    def letter(self, factor: str) -> str:
        return self.letters[self.factors.index(factor)]

    def name(self, w: Word) -> str:
        """`bidirectional:readout` for the word AG."""
        return ":".join(self.factors[self.letters.index(ch)] for ch in sorted(w))

    @property
    def title(self) -> str:
        return f"2^{self.k}" if not self.p else f"2^({self.k}-{self.p})"

    def generator_text(self) -> list[str]:
        """['E = ABC', 'F = BCD']"""
        return [f"{self.letters[self.k - self.p + i]} = {g}" for i, g in enumerate(self.generators)]

    @cached_property
    def defining_relation(self) -> tuple[Word, ...]:
        """Every product of the defining words (I = ABCE = BCDF = ...), shortest first."""
        base = [word(g) | {self.letters[self.k - self.p + i]} for i, g in enumerate(self.generators)]
        out = set()
        for n in range(1, len(base) + 1):
            for combo in itertools.combinations(base, n):
                acc = frozenset()
                for w in combo:
                    acc = acc ^ w
                out.add(acc)
        return tuple(sorted(out, key=lambda w: (len(w), spell(w))))

    @property
    def resolution(self) -> int | None:
        """The length of the shortest defining word; None for the full factorial (nothing aliased)."""
        return min(map(len, self.defining_relation)) if self.p else None

    @property
    def resolution_text(self) -> str:
        return ("full factorial" if self.resolution is None
                else f"resolution {ROMAN.get(self.resolution, self.resolution)}")

    @cached_property
    def matrix(self) -> tuple[tuple[int, ...], ...]:
        """The ±1 runs in standard (Yates) order of the basic letters; one column per factor."""
        basic = self.k - self.p
        rows = []
        for i in range(2 ** basic):
            levels = [1 if (i >> j) & 1 else -1 for j in range(basic)]
            for g in self.generators:
                v = 1
                for ch in g:
                    v *= levels[LETTERS.index(ch)]
                levels.append(v)
            rows.append(tuple(levels))
        return tuple(rows)

    def on_sets(self) -> list[frozenset]:
        """Each run as the set of factor names that are on."""
        return [frozenset(f for f, x in zip(self.factors, row) if x > 0) for row in self.matrix]

    def contains(self, on: frozenset) -> bool:
        return frozenset(on) in set(self.on_sets())

    def aliases(self, w: Word) -> list[Word]:
        """Every effect aliased with `w` (its products with the defining words), shortest first."""
        return sorted({w ^ d for d in self.defining_relation}, key=lambda x: (len(x), spell(x)))

    @cached_property
    def classes(self) -> tuple[tuple[Word, ...], ...]:
        """The 2^(k-p) - 1 alias classes of estimable contrasts, each led by its shortest words."""
        seen, out = {frozenset(), *self.defining_relation}, []  # the class of I is not a contrast
        for n in range(1, self.k + 1):
            for combo in itertools.combinations(self.letters, n):
                w = frozenset(combo)
                if w in seen:
                    continue
                chain = tuple([w, *self.aliases(w)])
                seen.update(chain)
                out.append(chain)
        return tuple(out)

    def main_effects(self) -> list[tuple[Word, list[Word]]]:
        """(main effect, its aliases of order <= 2) per factor, in letter order."""
        return [(word(ch), [a for a in self.aliases(word(ch)) if len(a) <= 2]) for ch in self.letters]

    def interaction_chains(self) -> list[tuple[Word, ...]]:
        """The estimable two-factor-interaction chains: alias classes led by a 2FI (not by a main effect),
        each as its 2FIs (higher-order members omitted)."""
        return [tuple(w for w in c if len(w) == 2) for c in self.classes if len(c[0]) == 2]

    def chain_name(self, chain: tuple[Word, ...]) -> str:
        """`bidirectional:readout = dropout:width = ...`"""
        return " = ".join(self.name(w) for w in chain)


def describe(d: Design) -> list[str]:
    """What --dry-run prints: generators, defining relation, resolution, the matrix, the aliases."""
    rows = [f"design: {d.title}, {d.runs} runs per seed, {d.resolution_text}",
            "factors: " + ", ".join(f"{ch} = {f}" for ch, f in zip(d.letters, d.factors))]
    if d.p:
        rows += ["generators: " + ", ".join(d.generator_text()),
                 "defining relation: I = " + " = ".join(spell(w) for w in d.defining_relation)]
    rows.append("baseline (all off) is " + ("in" if d.contains(frozenset()) else "NOT in")
                + " the fraction; full (all on) is in it")
    rows.append("design matrix (+ on, - off):")
    rows.append("  run  " + " ".join(f"{ch:>2}" for ch in d.letters))
    for i, row in enumerate(d.matrix, 1):
        rows.append(f"  {i:>3}  " + " ".join(f"{'+' if x > 0 else '-':>2}" for x in row))
    rows.append("main effects and what they are aliased with (up to two-factor interactions):")
    for w, al in d.main_effects():
        rows.append(f"  {spell(w)} {d.name(w)}: " + (", ".join(f"{spell(a)} ({d.name(a)})" for a in al)
                                                        if al else "clear"))
    chains = d.interaction_chains()
    rows.append(f"two-factor interactions: {len(chains)} estimable chains")
    for c in chains:
        rows.append(f"  {' = '.join(spell(w) for w in c)}:  {d.chain_name(c)}")
    return rows

# ---------------------------------------------------------------- choosing a design
def fractions(k: int) -> list[Design]:
    """Every design in the table for k factors, the full factorial first (largest first)."""
    letters = LETTERS[:k]
    return [Design(tuple(letters))] + [Design(tuple(letters), GENERATORS[(k, p)])
                                       for p in range(1, k) if (k, p) in GENERATORS]


def choose(factors: tuple[str, ...], resolution: int | None = None, runs: int | None = None) -> Design:
    """The design for these factors: by runs per seed, else the smallest of at least `resolution`, else
    the full factorial. Impossible requests are one-line ConfigErrors naming what exists."""
    k = len(factors)
    if not MIN_FACTORS <= k <= MAX_FACTORS:
        raise ConfigError(f"factorial has {k} factor{'s' * (k != 1)}: a two-level design here takes "
                          f"{MIN_FACTORS} to {MAX_FACTORS} (the six flags and readout)")
    if resolution is not None and runs is not None:
        raise ConfigError("give either resolution or runs_per_seed for the factorial design, not both")
    options = fractions(k)
    if runs is not None:
        hit = [d for d in options if d.runs == runs]
        if not hit:
            allowed = ", ".join(str(d.runs) for d in options)
            raise ConfigError(f"runs_per_seed={runs}: a {k}-factor design has {allowed} runs per seed")
        chosen = hit[0]
    elif resolution is not None:
        fit = [d for d in options if d.p and d.resolution >= resolution]
        if resolution < 3 or not fit:
            have = ", ".join(f"{d.title} {ROMAN[d.resolution]}" for d in options if d.p) or "none"
            raise ConfigError(f"resolution={resolution}: no {k}-factor fraction has it (fractions: {have}); "
                              "leave resolution out for the full factorial")
        chosen = min(fit, key=lambda d: d.runs)
    else:
        chosen = options[0]
    return Design(tuple(factors), chosen.generators)


def parse_resolution(value) -> int:
    """3, 4, ... or "III", "IV", ...; anything else is a ConfigError."""
    if isinstance(value, str) and value.upper() in ROMAN.values():
        return {v: k for k, v in ROMAN.items()}[value.upper()]
    if type(value) is int and value >= 1:
        return value
    raise ConfigError(f"resolution={value!r}: expected an integer such as 4 or a Roman numeral such as \"IV\"")
