"""SyntheticPopulation: agents with ages, households, schools, workplaces and community contacts."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._checks import check_int, memory_bytes
from ..graph import PopulationGraph
from ._pairs import _distinct, _pair_stubs, _sample_distinct, _triangle_pair
from .base import Dataset, Transform

__all__ = ["PopulationSpec", "SyntheticPopulation", "population_statistics"]

log = logging.getLogger(__name__)

AGE_BANDS = ((0, 19), (20, 29), (30, 39), (40, 49), (50, 59), (60, 69), (70, 79), (80, 89))
"""Years covered by the 8 age groups (80+ is drawn as 80-89: only ages <= 65 matter here)."""

# Franklin County, MA (FIPS 25011): census age shares and household sizes of the county's
# population parameters (GradABM 25011_generated_params.yaml, `age_ix_prob_list` and
# `households_sizes_prob_list`; see data/gradabm_ma/PROVENANCE.md).
CENSUS_AGE_SHARES = (
    0.20401601895199956, 0.11474138417282419, 0.11090586045462238, 0.13325624682723222,
    0.17118844830503693, 0.15487337131253878, 0.06469626036437476, 0.0463224096113712,
)  # fmt: skip
CENSUS_HOUSEHOLD_SIZES = {
    1: 0.3404992742325125, 2: 0.3175985424643815, 3: 0.143990614165864,
    4: 0.11976146407425071, 5: 0.04672432112547242, 6: 0.03142578393751882,
}  # fmt: skip
# Random daily contacts (mean, sd) of children (age group 0), adults (1-5) and the elderly
# (6-7): GradABM RandomNetworkParameters.csv.
RANDOM_CONTACTS = ((2.0, 2.0), (4.0, 4.0), (3.0, 3.0))
CONTACT_CATEGORY = (0, 1, 1, 1, 1, 1, 2, 2)

RELATIONS = ("household", "school", "work", "community")


@dataclass(frozen=True)
class PopulationSpec:
    """Everything that decides a synthetic population (besides its size and seed).

    Sources of the defaults: ``age_shares`` and ``household_sizes`` are the census shares of
    Franklin County, MA, and ``community_contacts`` its random-contact parameters (GradABM,
    see ``data/gradabm_ma/PROVENANCE.md``); ``school_size`` (526, mean US public school
    enrollment) and ``student_teacher_ratio`` (15.9) are NCES 2019 figures;
    ``workplace_exponent`` 1.06 is the tail exponent of US firm sizes, P(S >= s) ~ s^-1.06
    (Axtell 2001, Science 293:1818); ``school_contacts`` 20 and ``work_contacts`` 16 are
    Covasim's hybrid-population defaults (Kerr et al. 2021). ``employment_rate`` 0.75
    (ages 20-64) and ``enrollment`` 0.95 (ages 5-17) are round modelling assumptions close to
    BLS / NCES figures; set them from your own data.

    Args:
        age_shares: shares of the 8 age groups (0-19, 20-29, ..., 70-79, 80+); sum to 1.
        household_sizes: ``{size: share of households}``; shares sum to 1.
        school_ages: ``(first, last)`` age in years that attends school.
        school_levels: ages at which a new school level starts (elementary, middle, high:
            5, 11, 14); children of different levels never share a school.
        enrollment: probability that a child of school age attends school.
        school_size: mean number of students per school.
        student_teacher_ratio: students per teacher; teachers are drawn from the employed.
        school_contacts: mean contacts of a student or teacher within the school.
        employment_rate: probability that an agent aged 20-64 works.
        workplace_exponent: ``alpha`` in ``P(S = s) ~ s^-(1 + alpha)``, ``1 <= s <= max``.
        max_workplace_size: largest workplace.
        work_contacts: mean contacts of a worker within the workplace.
        community_contacts: ``(mean, sd)`` of random community contacts per agent for
            children, adults and the elderly (negative binomial with that mean and variance;
            Poisson when ``sd**2 <= mean``).
    """

    age_shares: tuple[float, ...] = CENSUS_AGE_SHARES
    household_sizes: Mapping[int, float] = field(default_factory=lambda: CENSUS_HOUSEHOLD_SIZES)
    school_ages: tuple[int, int] = (5, 17)
    school_levels: tuple[int, ...] = (5, 11, 14)
    enrollment: float = 0.95
    school_size: float = 526.0
    student_teacher_ratio: float = 15.9
    school_contacts: float = 20.0
    employment_rate: float = 0.75
    workplace_exponent: float = 1.06
    max_workplace_size: int = 1000
    work_contacts: float = 16.0
    community_contacts: tuple[tuple[float, float], ...] = RANDOM_CONTACTS

    def __post_init__(self) -> None:
        shares = np.asarray(self.age_shares, dtype=np.float64)
        if shares.shape != (8,):
            raise ValueError(f"age_shares needs 8 shares (0-19, ..., 80+), got {shares.shape}.")
        _check_shares(shares, "age_shares")
        sizes = dict(self.household_sizes)
        if not sizes or any(not isinstance(k, int) or k < 1 for k in sizes):
            raise ValueError(
                f"household_sizes must map sizes >= 1 (ints) to shares, got {sizes!r}."
            )
        _check_shares(np.array(list(sizes.values()), dtype=np.float64), "household_sizes")
        lo, hi = self.school_ages
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in (lo, hi)) or not (
            0 <= lo <= hi <= 89
        ):
            raise ValueError(f"school_ages must be (first, last) within 0..89, got {(lo, hi)}.")
        if list(self.school_levels) != sorted(self.school_levels) or self.school_levels[0] > lo:
            raise ValueError(
                f"school_levels must be increasing ages starting at or below {lo}, "
                f"got {self.school_levels}."
            )
        for name in ("enrollment", "employment_rate"):
            value = getattr(self, name)
            if not _is_number(value) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} is a probability in [0, 1], got {value!r}.")
        for name in ("school_size", "student_teacher_ratio", "workplace_exponent"):
            value = getattr(self, name)
            if not _is_number(value) or not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}.")
        for name in ("school_contacts", "work_contacts"):
            value = getattr(self, name)
            if not _is_number(value) or not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a non-negative number, got {value!r}.")
        size = self.max_workplace_size
        if not _is_number(size) or not (math.isfinite(size) and size >= 1):
            raise ValueError(f"max_workplace_size must be >= 1, got {size!r}.")
        contacts = np.asarray(self.community_contacts, dtype=np.float64)
        if contacts.shape != (3, 2) or not np.isfinite(contacts).all() or (contacts < 0).any():
            raise ValueError(
                "community_contacts needs (mean, sd) >= 0 for children, adults and the "
                f"elderly, got {self.community_contacts!r}."
            )

    def household_pmf(self) -> tuple[np.ndarray, np.ndarray]:
        """Household sizes and their shares (normalised)."""
        sizes = np.array(sorted(self.household_sizes), dtype=np.int64)
        shares = np.array([self.household_sizes[k] for k in sizes], dtype=np.float64)
        return sizes, shares / shares.sum()

    def workplace_pmf(self) -> tuple[np.ndarray, np.ndarray]:
        """Workplace sizes ``1..max`` and ``P(S = s) ~ s^-(1 + alpha)``."""
        sizes = np.arange(1, int(self.max_workplace_size) + 1, dtype=np.int64)
        weights = sizes.astype(np.float64) ** -(1.0 + self.workplace_exponent)
        return sizes, weights / weights.sum()

    def expected_degrees(self) -> dict[str, float]:
        """Mean degree per edge type implied by the inputs (over the agents it concerns).

        household: ``E[k (k - 1)] / E[k]`` over the household-size shares (all agents);
        work: ``E[min(S - 1, d)]`` over the workplace a worker is in (size-biased sizes);
        school: ``d`` (schools are far larger than ``d``); community: the age-weighted mean.
        """
        sizes, shares = self.household_pmf()
        household = float((shares * sizes * (sizes - 1)).sum() / (shares * sizes).sum())
        wsizes, wshares = self.workplace_pmf()
        biased = wshares * wsizes / (wshares * wsizes).sum()
        work = float((biased * np.minimum(wsizes - 1, self.work_contacts)).sum())
        means = np.array([m for m, _ in self.community_contacts])[list(CONTACT_CATEGORY)]
        community = float((np.asarray(self.age_shares) * means).sum() / sum(self.age_shares))
        return {
            "household": household,
            "school": float(self.school_contacts),
            "work": work,
            "community": community,
        }

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["household_sizes"] = {str(k): v for k, v in sorted(self.household_sizes.items())}
        return out


class SyntheticPopulation(Dataset):
    r"""A synthetic population: ages, households, schools, workplaces and community contacts.

    One :class:`~lpm_graph.PopulationGraph` with node type ``"agent"`` and four typed
    agent -> agent relations, ``household``, ``school``, ``work`` and ``community`` (each
    contact stored in both directions), built in this order, each from its own random stream
    (changing the school settings leaves the community contacts unchanged):

    1. **Ages**: the 8 age-group counts are allocated exactly (largest remainder) from
       ``age_shares``; the age in years is uniform within the group.
    2. **Households**: household counts per size are allocated exactly from
       ``household_sizes`` (the total is then matched to ``num_agents`` by adding single
       households or shrinking the largest ones). Each household is headed by an adult
       (20+); the other members are drawn at random from the remaining agents. Members of a
       household get consecutive ids, which keeps most contacts local in memory.
       Contacts: every pair of members.
    3. **Schools**: children of school age attend with probability ``enrollment``; schools
       are filled by level (elementary, middle, high), siblings together, with about
       ``school_size`` students and one teacher (an employed adult) per
       ``student_teacher_ratio`` students. Contacts: a uniform random graph within each
       school with mean degree ``school_contacts`` (every pair when the school is smaller).
    4. **Workplaces**: other employed adults (20-64, ``employment_rate``) fill workplaces of
       Zipf-distributed size. Contacts: as in schools, mean degree ``work_contacts``.
    5. **Community**: each agent draws a number of random contacts (negative binomial,
       mean and sd by child / adult / elderly) and the stubs are paired at random
       (erased configuration model: self-pairs and repeats are dropped and counted).

    **Why typed agent -> agent edges** rather than place nodes: the transmission layers of
    this library act on agent -> agent relations, each with its own weight (a household
    contact is not a work contact), and a contact graph within a 1,000-person workplace is not
    "everyone meets everyone". For the other representation (place nodes with membership
    edges, far fewer edges for large places) apply
    :class:`~lpm_graph.datasets.transforms.PlacesAsNodes`.

    Agents carry ``age_group`` (int64, 0..7), ``age`` (int64, years), ``household`` (int64),
    ``school`` and ``workplace`` (int64, -1 for none; a teacher's ``school`` is the school
    where they teach). Graph values (``graph.meta``): the counts of households, schools and
    workplaces and the community contacts erased. Use :func:`population_statistics` to
    compare a population with its inputs.

    **STATS** (defaults, seed 0; ``benchmarks/datasets.py`` on 2 cores; mean degree over the
    agents concerned: everyone for household and community, students and teachers for
    school, workers for work; the inputs imply 2.085 / 20 / 9.671 / 3.481):

    .. list-table::
        :header-rows: 1

        * - agents
          - contacts (undirected)
          - household
          - school
          - work
          - community
          - time
          - peak memory
        * - 1,000,000
          - 6,285,381
          - 2.085
          - 20.000
          - 9.674
          - 3.480
          - 1.4 s
          - 0.83 GiB
        * - 10,000,000
          - 62,861,569
          - 2.085
          - 20.000
          - 9.671
          - 3.480
          - 25 s
          - 3.7 GiB

    Args:
        num_agents: number of agents.
        seed: random seed (the same seed gives the same population, bit for bit).
        spec: a :class:`PopulationSpec`; keyword arguments override its fields
            (``SyntheticPopulation(10_000, enrollment=0.9)``).
        root: cache folder; default ``False`` (generate in memory, write nothing).
        transform: applied to each item on access (as in PyG).
        pre_transform: applied to each item once, before caching (as in PyG).
        force_reload: process again even if a cached copy exists (as in PyG).
    """

    def __init__(
        self,
        num_agents: int,
        seed: int = 0,
        *,
        spec: PopulationSpec | None = None,
        root: str | Path | None | bool = False,
        transform: Transform | None = None,
        pre_transform: Transform | None = None,
        force_reload: bool = False,
        **overrides: Any,
    ) -> None:
        num_agents = check_int(num_agents, "num_agents", 1)
        _check_memory(num_agents)
        seed = check_int(seed, "seed")
        if spec is not None and not isinstance(spec, PopulationSpec):
            raise ValueError(
                f"spec must be a PopulationSpec or None, got {type(spec).__name__}; pass "
                "PopulationSpec(...) or the fields as keyword arguments."
            )
        spec = spec or PopulationSpec()
        unknown = sorted(set(overrides) - set(PopulationSpec.__dataclass_fields__))
        if unknown:
            raise ValueError(
                f"unknown SyntheticPopulation argument(s) {unknown}; valid: "
                f"{sorted(PopulationSpec.__dataclass_fields__)}."
            )
        self.spec = PopulationSpec(**{**asdict(spec), **overrides}) if overrides else spec
        self.num_agents = num_agents
        self.seed = seed
        super().__init__(root, transform, pre_transform, force_reload)

    def cache_args(self) -> dict[str, Any]:
        return {"num_agents": self.num_agents, "seed": self.seed, "spec": self.spec.to_json()}

    def process(self) -> None:
        graph = generate_population(self.num_agents, self.seed, self.spec)
        self.save([graph], self.processed_paths[0] if self.root is not None else None)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.num_agents:,}, seed={self.seed})"


def generate_population(num_agents: int, seed: int, spec: PopulationSpec) -> PopulationGraph:
    """Build the population described in :class:`SyntheticPopulation` (no caching)."""
    n = num_agents
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5)]
    ages_rng, household_rng, school_rng, work_rng, community_rng = streams

    sizes = _household_sizes(n, spec, household_rng)
    age_group, age = _ages(n, sizes, spec, ages_rng, household_rng)
    household = np.repeat(np.arange(len(sizes)), sizes)
    edges = {
        "household": _within_groups(np.arange(n), sizes, sizes * (sizes - 1) // 2, household_rng)
    }

    worker = (age >= 20) & (age <= 64) & (work_rng.random(n) < spec.employment_rate)
    school, teachers, school_members, school_sizes = _schools(age, worker, spec, school_rng)
    worker[teachers] = False
    edges["school"] = _group_contacts(
        school_members, school_sizes, spec.school_contacts, school_rng
    )

    workplace, work_members, work_sizes = _workplaces(worker, spec, work_rng)
    edges["work"] = _group_contacts(work_members, work_sizes, spec.work_contacts, work_rng)

    edges["community"], erased = _community(age_group, spec, community_rng)

    from torch_geometric.data import HeteroData

    data = HeteroData()
    data["agent"].num_nodes = n
    for name, value in (
        ("age_group", age_group),
        ("age", age),
        ("household", household),
        ("school", school),
        ("workplace", workplace),
    ):
        data["agent"][name] = torch.from_numpy(value.astype(np.int64, copy=False))
    for name in RELATIONS:
        u, v = edges.pop(name)
        store = data["agent", name, "agent"]
        store.edge_index = torch.from_numpy(
            np.stack([np.concatenate([u, v]), np.concatenate([v, u])])
        )
        store.undirected = True
        del u, v
    data.num_households = len(sizes)
    data.num_schools = len(school_sizes)
    data.num_workplaces = len(work_sizes)
    data.community_erased_edges = erased[0]
    data.community_erased_fraction = erased[1]
    data.seed = seed
    log.info("synthetic population: %s", data)
    return PopulationGraph(data)


# ---------------------------------------------------------------------------- households, ages


def _allocate(total: int, shares: np.ndarray) -> np.ndarray:
    """Integer counts summing to ``total``, proportional to ``shares`` (largest remainder)."""
    exact = total * shares / shares.sum()
    counts = np.floor(exact).astype(np.int64)
    short = total - int(counts.sum())
    if short:
        counts[np.argsort(-(exact - counts), kind="stable")[:short]] += 1
    return counts


def _household_sizes(n: int, spec: PopulationSpec, rng: np.random.Generator) -> np.ndarray:
    """The size of every household, in random order, summing to ``n``."""
    sizes, shares = spec.household_pmf()
    counts = _allocate(max(1, round(n / float((sizes * shares).sum()))), shares)
    per_household = np.repeat(sizes, counts)
    excess = int(per_household.sum()) - n
    if excess < 0:  # too few agents placed: add single households
        per_household = np.concatenate([per_household, np.ones(-excess, dtype=np.int64)])
    while excess > 0:  # too many: shrink the largest households by one each
        order = np.argsort(-per_household, kind="stable")[:excess]
        shrink = order[per_household[order] > 1]
        per_household[shrink] -= 1
        excess -= len(shrink)
        per_household = per_household[per_household > 0]
    return rng.permutation(per_household)


def _ages(
    n: int,
    sizes: np.ndarray,
    spec: PopulationSpec,
    ages_rng: np.random.Generator,
    household_rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Age group and years per agent; agents are numbered household by household and the
    first member of each household (its head) is an adult."""
    counts = _allocate(n, np.asarray(spec.age_shares, dtype=np.float64))
    pool = household_rng.permutation(np.repeat(np.arange(8, dtype=np.int64), counts))
    adults = np.flatnonzero(pool >= 1)
    num_households = len(sizes)
    if num_households > len(adults):
        raise ValueError(
            f"{num_households:,} households need {num_households:,} adult heads but the age "
            f"shares give only {len(adults):,} adults (20+); raise the adult shares or the "
            "household sizes."
        )
    heads = household_rng.choice(adults, size=num_households, replace=False)
    rest = np.ones(n, dtype=bool)
    rest[heads] = False
    head_slot = np.zeros(n, dtype=bool)
    head_slot[np.concatenate([[0], np.cumsum(sizes)[:-1]])] = True
    age_group = np.empty(n, dtype=np.int64)
    age_group[head_slot] = pool[heads]
    age_group[~head_slot] = household_rng.permutation(pool[rest])
    bands = np.array(AGE_BANDS)
    lo, width = bands[age_group, 0], bands[age_group, 1] - bands[age_group, 0] + 1
    age = lo + np.floor(ages_rng.random(n) * width).astype(np.int64)
    return age_group, age


# ---------------------------------------------------------------------------- places


def _schools(
    age: np.ndarray, worker: np.ndarray, spec: PopulationSpec, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """School id per agent (-1: none), the teachers, and school members grouped by school."""
    n = len(age)
    first, last = spec.school_ages
    student = (age >= first) & (age <= last) & (rng.random(n) < spec.enrollment)
    level = np.searchsorted(np.asarray(spec.school_levels), age, side="right") - 1
    school = np.full(n, -1, dtype=np.int64)
    students_of, next_id = [], 0
    for lv in range(len(spec.school_levels)):
        ids = np.flatnonzero(student & (level == lv))  # household order: siblings together
        if not len(ids):
            continue
        count = max(1, round(len(ids) / spec.school_size))
        for chunk in np.array_split(ids, count):
            school[chunk] = next_id
            students_of.append(chunk)
            next_id += 1
    num_schools = next_id
    sizes = np.array([len(c) for c in students_of], dtype=np.int64)
    wanted = np.maximum(1, np.round(sizes / spec.student_teacher_ratio)).astype(np.int64)
    candidates = rng.permutation(np.flatnonzero(worker))
    if wanted.sum() > len(candidates):
        raise ValueError(
            f"{int(wanted.sum()):,} teachers are needed but only {len(candidates):,} agents work; "
            "raise employment_rate or student_teacher_ratio."
        )
    teachers = candidates[: int(wanted.sum())]
    teacher_school = np.repeat(np.arange(num_schools), wanted)
    school[teachers] = teacher_school
    members = np.concatenate(students_of + [teachers]) if num_schools else np.empty(0, np.int64)
    group = np.concatenate([np.repeat(np.arange(num_schools), sizes), teacher_school])
    order = np.argsort(group, kind="stable")
    return school, teachers, members[order], sizes + wanted


def _workplaces(
    worker: np.ndarray, spec: PopulationSpec, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Workplace id per agent (-1: none) and workers grouped by workplace."""
    workers = rng.permutation(np.flatnonzero(worker))
    workplace = np.full(len(worker), -1, dtype=np.int64)
    if not len(workers):
        return workplace, workers, np.empty(0, dtype=np.int64)
    # Systematic sampling of the size distribution (one uniform offset, evenly spaced
    # quantiles): the share of workers per size is close to the input even at small N,
    # where independent draws of a heavy-tailed size fluctuate by several percent.
    sizes_of, pmf = spec.workplace_pmf()
    mean = float((sizes_of * pmf).sum())
    count = max(1, round(len(workers) / mean))
    quantiles = (np.arange(count) + rng.random()) / count
    cdf = np.cumsum(pmf)
    sizes = sizes_of[np.minimum(np.searchsorted(cdf, quantiles), len(cdf) - 1)]
    while sizes.sum() < len(workers):  # top up the few missing workers with random sizes
        extra = int((len(workers) - sizes.sum()) / mean) + 1
        sizes = np.concatenate([sizes, rng.choice(sizes_of, size=extra, p=pmf)])
    sizes = rng.permutation(sizes)
    cut = int(np.searchsorted(np.cumsum(sizes), len(workers)))
    sizes = sizes[: cut + 1]
    sizes[-1] -= int(sizes.sum()) - len(workers)  # the last workplace takes who is left
    sizes = sizes[sizes > 0]
    workplace[workers] = np.repeat(np.arange(len(sizes)), sizes)
    return workplace, workers, sizes


# ---------------------------------------------------------------------------- contacts


def _within_groups(
    members: np.ndarray, sizes: np.ndarray, wanted: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``wanted[g]`` distinct pairs drawn uniformly among the members of each group ``g``
    (``members`` lists group 0's members, then group 1's, ...); every pair when ``wanted``
    is ``size * (size - 1) / 2``."""
    group, rank = _sample_distinct(wanted, sizes * (sizes - 1) // 2, rng)
    i, j = _triangle_pair(rank)
    start = (np.cumsum(sizes) - sizes)[group]
    return members[start + i], members[start + j]


def _group_contacts(
    members: np.ndarray, sizes: np.ndarray, degree: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A uniform random graph with ``round(size * degree / 2)`` contacts within each group
    (every pair when the group has fewer pairs than that)."""
    wanted = np.minimum(np.round(sizes * degree / 2).astype(np.int64), sizes * (sizes - 1) // 2)
    return _within_groups(members, sizes, wanted, rng)


def _community(
    age_group: np.ndarray, spec: PopulationSpec, rng: np.random.Generator
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[int, float]]:
    """Erased configuration model over negative-binomial degrees by age category."""
    n = len(age_group)
    category = np.asarray(CONTACT_CATEGORY)[age_group]
    degree = np.zeros(n, dtype=np.int64)
    for c, (mean, sd) in enumerate(spec.community_contacts):
        idx = np.flatnonzero(category == c)
        degree[idx] = _count_draws(mean, sd, len(idx), rng)
    if degree.sum() % 2:
        degree[rng.integers(n)] += 1
    a, b = _pair_stubs(degree, rng)
    keep = a != b
    keys = _distinct(np.minimum(a, b)[keep] * n + np.maximum(a, b)[keep])
    erased = len(a) - len(keys)
    return (keys // n, keys % n), (int(erased), erased / max(len(a), 1))


def _count_draws(mean: float, sd: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """Non-negative integers with the given mean and sd (negative binomial; Poisson when the
    variance does not exceed the mean)."""
    var = sd * sd
    if mean == 0:
        return np.zeros(size, dtype=np.int64)
    if var <= mean:
        return rng.poisson(mean, size)
    r = mean * mean / (var - mean)
    return rng.negative_binomial(r, r / (r + mean), size)


# ---------------------------------------------------------------------------- statistics


def population_statistics(graph: PopulationGraph) -> dict[str, Any]:
    """Realised statistics of a synthetic population, to compare with its inputs.

    Returns ``age_shares`` (8 shares), ``household_sizes`` ({size: share of households}) and
    ``mean_degree`` ({edge type: mean degree over the agents it concerns: everyone for
    household and community, students and teachers for school, workers for work}).
    """
    if not isinstance(graph, PopulationGraph) or "agent" not in graph.node_types:
        raise ValueError(
            f"graph must be a synthetic population (a PopulationGraph with 'agent' nodes, "
            f"e.g. SyntheticPopulation(1000)[0]), got {type(graph).__name__}."
        )
    agents = graph["agent"]
    n = graph.num_nodes("agent")
    age_shares = torch.bincount(agents.age_group, minlength=8).double() / n
    household_size = torch.bincount(agents.household)
    sizes = torch.bincount(household_size)
    shares = {
        k: float(sizes[k]) / float(household_size.numel()) for k in range(1, len(sizes)) if sizes[k]
    }
    members = {
        "household": n,
        "school": int((agents.school >= 0).sum()),
        "work": int((agents.workplace >= 0).sum()),
        "community": n,
    }
    degree = {rel: graph.num_edges(rel) / max(members[rel], 1) for rel in RELATIONS}
    return {"age_shares": age_shares.tolist(), "household_sizes": shares, "mean_degree": degree}


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _check_shares(shares: np.ndarray, name: str) -> None:
    if not np.isfinite(shares).all() or (shares < 0).any():
        raise ValueError(f"{name} must be finite and non-negative, got {shares.tolist()}.")
    if abs(float(shares.sum()) - 1.0) > 1e-6:
        raise ValueError(
            f"{name} must sum to 1, got {float(shares.sum()):.6g}; normalise them "
            "(shares / shares.sum())."
        )


BYTES_PER_AGENT = 400
"""Peak memory of building a default population, per agent (3.7 GiB at 1e7 agents)."""


def _check_memory(num_agents: int) -> None:
    """Refuse, with the estimate, a population that cannot fit in this machine's memory,
    before allocating anything (``synthetic:99999999999999`` once tried to take 315 TiB)."""
    total = memory_bytes()
    if total is None:  # not a POSIX system: no estimate to compare
        return
    need = num_agents * BYTES_PER_AGENT
    if need > total:
        raise ValueError(
            f"num_agents={num_agents:,} needs about {need / 2**30:,.0f} GiB to build (about "
            f"{BYTES_PER_AGENT} bytes per agent) and this machine has {total / 2**30:,.0f} GiB "
            f"of memory; choose at most {total // BYTES_PER_AGENT:,} agents."
        )
