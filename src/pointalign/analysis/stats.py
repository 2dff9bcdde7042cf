"""Confidence intervals and paired tests for the comparison report: is a PointAlign - baseline difference real?

Every evaluation score of ``pointalign reproduce`` is a mean over objects (a close-set answer is right or wrong, a
caption has a BLEU-1 score, ...), and baseline and PointAlign are scored on the same objects. So:

- ``bootstrap_ci``: the percentile bootstrap of a mean over objects (objects resampled with replacement).
- ``paired_bootstrap``: the difference ``mean(b - a)`` over the same objects, with a percentile-bootstrap CI
  (object indices resampled, the same ones for ``a`` and ``b``) and the two-sided p-value of a **paired sign-flip
  permutation test**: under the null hypothesis that the two models are exchangeable on every object, each
  per-object difference ``d_i = b_i - a_i`` is as likely to be ``-d_i``, so the observed ``|sum(d)|`` is compared
  with ``|sum(s_i d_i)|`` over random signs ``s_i = +-1``; ``p = (1 + #{|flipped| >= |observed|}) / (1 + flips)``
  (the observed signs count as one of the flips, which keeps the Monte Carlo p-value valid: P(p <= alpha) <= alpha
  under the null). With ``2**n <= n_boot`` every sign pattern is enumerated and p is exact. For right/wrong scores
  this is the exact-conditional McNemar test; it needs no normality and no variance estimate.
- ``pooled_paired``: several seeds over the same objects. Each object's difference is averaged over the seeds first
  and the objects are then resampled (and sign-flipped) as units, the seeds of one object kept together. The
  seeds' scores of one object are not independent (the same cloud, the same question), so treating the
  ``seeds x objects`` differences as independent would shrink the CI by up to ``sqrt(seeds)`` for nothing. The
  delta is the same either way (the mean over all seed-object pairs). The CI is over objects *given these trained
  models*: with one to three seeds there is nothing to resample seeds from, so the spread between seeds is shown
  separately (mean +- std over seeds).
- ``verdict``: one sentence saying whether a difference is distinguishable from zero at the level: both the CI
  excludes zero and ``p < 1 - level`` (the two procedures almost always agree; when they do not, the sentence says
  indistinguishable).

Shapes: N = objects, S = seeds, R = bootstrap resamples or sign flips.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

_CHUNK = 2_000_000  # at most this many resampled values in memory at once (rows of R x N)


@dataclass(frozen=True)
class PairedResult:
    """A paired difference ``mean(b - a)`` over the same objects."""

    delta: float  # mean over objects of b - a
    low: float  # lower end of the percentile-bootstrap CI of delta
    high: float  # upper end
    p_value: float  # two-sided p of the paired sign-flip permutation test
    n: int  # objects
    level: float = 0.95  # confidence level of [low, high]; the test's alpha is 1 - level


def _vector(values: ArrayLike, name: str) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D sequence of per-object scores, got shape {x.shape}")
    if x.size == 0:
        raise ValueError(f"{name}: no values (needs at least one object)")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name}: {int((~np.isfinite(x)).sum())} value(s) are NaN or infinite")
    return x


def _check(n_boot: int, level: float) -> None:
    if n_boot < 1:
        raise ValueError(f"n_boot={n_boot}: needs at least 1 resample")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level={level}: a confidence level is between 0 and 1 (e.g. 0.95)")


def _boot_means(x: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(R,) means of ``x`` (N,) over resamples of its indices with replacement."""
    n = x.size
    rows = max(1, _CHUNK // n)
    out = np.empty(n_boot)
    for start in range(0, n_boot, rows):
        r = min(rows, n_boot - start)
        idx = rng.integers(0, n, size=(r, n))  # (r, N)
        out[start : start + r] = x[idx].mean(axis=1)
    return out


def _interval(means: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def bootstrap_ci(
    values: ArrayLike, n_boot: int = 10_000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """Percentile-bootstrap CI of the mean over objects.

    Args:
        values: (N,) one score per object.
        n_boot: resamples of the N objects (with replacement).
        seed: seed of the resampling; the same seed gives the same interval.
        level: confidence level of the interval.

    Returns:
        ``(mean, low, high)``; a constant array gives ``low == mean == high``.

    Raises:
        ValueError: empty, non-1-D or non-finite values, ``n_boot < 1`` or a level outside (0, 1).
    """
    x = _vector(values, "bootstrap_ci")
    _check(n_boot, level)
    low, high = _interval(_boot_means(x, n_boot, np.random.default_rng(seed)), level)
    mean = float(x.mean())
    return mean, min(low, mean), max(high, mean)  # rounding of a constant array's resampled means stays inside


def sign_flip_p(d: np.ndarray, n_flips: int, rng: np.random.Generator) -> float:
    """Two-sided p of the paired sign-flip test of ``mean(d) = 0`` for differences ``d`` (N,).

    Exact (all ``2**N`` sign patterns) when ``2**N <= n_flips``, else ``n_flips`` random patterns plus the observed.
    """
    n = d.size
    observed = abs(float(d.sum()))
    tol = 1e-9 * max(1.0, float(np.abs(d).sum()))  # equal sums of a discrete score must count as ties
    if n < 63 and 2**n <= n_flips:
        patterns = ((np.arange(2**n)[:, None] >> np.arange(n)) & 1) * 2 - 1  # (2**N, N) every sign pattern
        return float(np.mean(np.abs(patterns @ d) >= observed - tol))
    rows = max(1, _CHUNK // n)
    hits = 0
    for start in range(0, n_flips, rows):
        r = min(rows, n_flips - start)
        signs = rng.integers(0, 2, size=(r, n), dtype=np.int8) * 2 - 1  # (r, N)
        hits += int(np.sum(np.abs(signs @ d) >= observed - tol))
    return (1 + hits) / (1 + n_flips)


def _paired(d: np.ndarray, n_boot: int, seed: int, level: float) -> PairedResult:
    boot_seq, flip_seq = np.random.SeedSequence(seed).spawn(2)  # independent streams for the CI and the test
    low, high = _interval(_boot_means(d, n_boot, np.random.default_rng(boot_seq)), level)
    delta = float(d.mean())
    p = sign_flip_p(d, n_boot, np.random.default_rng(flip_seq))
    return PairedResult(delta, min(low, delta), max(high, delta), p, int(d.size), level)


def paired_bootstrap(
    a: ArrayLike, b: ArrayLike, n_boot: int = 10_000, seed: int = 0, level: float = 0.95
) -> PairedResult:
    """``mean(b - a)`` over the same objects: a paired percentile-bootstrap CI and a sign-flip permutation p-value.

    Args:
        a: (N,) per-object scores of the reference (the baseline).
        b: (N,) per-object scores of the compared model (PointAlign), object ``i`` the same as in ``a``.
        n_boot: bootstrap resamples for the CI, and random sign flips for the test.
        seed: seed of both; the same seed gives the same result.
        level: confidence level of the CI; the test is read at ``alpha = 1 - level``.

    Returns:
        A ``PairedResult`` (delta = mean(b - a)).

    Raises:
        ValueError: lengths differ, empty or non-finite values, ``n_boot < 1`` or a level outside (0, 1).
    """
    x, y = _vector(a, "paired_bootstrap: a"), _vector(b, "paired_bootstrap: b")
    if x.size != y.size:
        raise ValueError(
            f"paired_bootstrap: a has {x.size} objects and b {y.size}; a paired comparison needs the same objects"
        )
    _check(n_boot, level)
    return _paired(y - x, n_boot, seed, level)


def pooled_paired(
    pairs: Sequence[tuple[ArrayLike, ArrayLike]], n_boot: int = 10_000, seed: int = 0, level: float = 0.95
) -> PairedResult:
    """The paired difference pooled over seeds: objects resampled (and sign-flipped) with their seeds together.

    Args:
        pairs: one ``(a, b)`` per seed, each (N,) over the same N objects in the same order (see the module
            docstring for why the seeds of an object stay together).
        n_boot: as ``paired_bootstrap``.
        seed: as ``paired_bootstrap``.
        level: as ``paired_bootstrap``.

    Returns:
        A ``PairedResult`` whose delta is the mean of ``b - a`` over every seed and object and whose ``n`` is N.

    Raises:
        ValueError: no pairs, a pair whose lengths differ, seeds with different numbers of objects, or any
            ``paired_bootstrap`` input error.
    """
    if len(pairs) == 0:
        raise ValueError("pooled_paired: no (a, b) pairs (needs at least one seed)")
    diffs = []
    for s, pair in enumerate(pairs):
        if len(pair) != 2:
            raise ValueError(f"pooled_paired: seed {s} is not an (a, b) pair")
        x, y = _vector(pair[0], f"pooled_paired: seed {s} a"), _vector(pair[1], f"pooled_paired: seed {s} b")
        if x.size != y.size:
            raise ValueError(f"pooled_paired: seed {s} has {x.size} objects in a and {y.size} in b")
        if diffs and x.size != diffs[0].size:
            raise ValueError(
                f"pooled_paired: seed {s} has {x.size} objects, seed 0 {diffs[0].size}; every seed must score the "
                "same objects"
            )
        diffs.append(y - x)
    _check(n_boot, level)
    return _paired(np.stack(diffs).mean(axis=0), n_boot, seed, level)  # (S, N) -> (N,) per-object mean over seeds


def direction(result: PairedResult) -> Literal["higher", "lower", "indistinguishable"]:
    """``b`` higher or lower than ``a``: the CI excludes zero and ``p < 1 - level``; else indistinguishable."""
    if result.p_value < 1.0 - result.level:
        if result.low > 0:
            return "higher"
        if result.high < 0:
            return "lower"
    return "indistinguishable"


def format_p(p: float, bare: bool = False) -> str:
    """``p = 0.012`` or ``p < 0.001``; ``bare``: ``0.012`` or ``< 0.001`` (a table cell)."""
    text = "< 0.001" if p < 0.001 else f"{p:.3f}"
    if bare:
        return text
    return f"p {text}" if p < 0.001 else f"p = {text}"


def verdict(result: PairedResult, name: str = "PointAlign", reference: str = "the baseline", digits: int = 2) -> str:
    """One sentence: is ``name`` (b) higher or lower than ``reference`` (a), or is the difference indistinguishable?

    E.g. ``PointAlign is higher than the baseline by 5.00 (95 % CI [1.50, 8.50], p = 0.004).``
    """
    f = f"{{:.{digits}f}}"
    ci = f"{100 * result.level:g} % CI [{f.format(result.low)}, {f.format(result.high)}], {format_p(result.p_value)}"
    way = direction(result)
    if way == "indistinguishable":
        delta = f"{result.delta:+.{digits}f}"
        return f"The difference between {name} and {reference}, {delta}, is indistinguishable from zero ({ci})."
    return f"{name} is {way} than {reference} by {f.format(abs(result.delta))} ({ci})."
