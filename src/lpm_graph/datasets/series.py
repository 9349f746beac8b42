"""Observed time series bundled with the package: Massachusetts counties and US state ILI.

Both datasets hold one :class:`Series` per region. Dates are stored as int64 day numbers
(days since 1970-01-01) so that items cache as plain tensors; :attr:`Series.dates` gives them
as :class:`datetime.date`. Weekly series follow MMWR epidemiological weeks (Sunday to
Saturday) and are dated by the week's last day, the Saturday.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import Tensor

from .base import Dataset, Transform

__all__ = ["CountySeries", "Series", "StateILI", "epiweek_end", "epiweek_of"]

Frequency = Literal["daily", "weekly"]
Split = Literal["train", "val", "test"]
DateLike = dt.date | str

_EPOCH = dt.date(1970, 1, 1).toordinal()
_FREQUENCIES = ("daily", "weekly")
_SPLITS = ("train", "val", "test")
_STEP = {"daily": 1, "weekly": 7}


# ---------------------------------------------------------------------------- dates


def _day(date: DateLike) -> int:
    """Days since 1970-01-01 of a :class:`datetime.date` or an ISO ``"YYYY-MM-DD"`` string."""
    if isinstance(date, str):
        date = dt.date.fromisoformat(date)
    if isinstance(date, dt.datetime) or not isinstance(date, dt.date):
        raise TypeError(f"expected a datetime.date or 'YYYY-MM-DD', got {date!r}.")
    return date.toordinal() - _EPOCH


def _date(day: int) -> dt.date:
    return dt.date.fromordinal(int(day) + _EPOCH)


def _mmwr_week1_start(year: int) -> dt.date:
    """The Sunday that starts MMWR week 1: the Sunday-to-Saturday week holding 4 January.

    A Sunday-to-Saturday week has at least four days in ``year`` exactly when it holds its
    Wednesday in ``year``, that is when it holds 4 January.
    """
    jan4 = dt.date(year, 1, 4)
    return jan4 - dt.timedelta(days=(jan4.weekday() + 1) % 7)  # weekday(): Monday = 0


def epiweek_end(epiweek: int | str) -> dt.date:
    """The Saturday that ends MMWR week ``epiweek`` (``YYYYWW``, e.g. ``202001``).

    MMWR weeks run Sunday to Saturday; week 1 is the first week with at least four days in
    the calendar year, so a year has 52 or 53 weeks (``202001`` ends 2020-01-04, ``201901``
    ends 2019-01-05, ``201453`` ends 2015-01-03; ``201753`` does not exist).

    Raises:
        ValueError: when the week does not exist in that year.
    """
    year, week = divmod(int(epiweek), 100)
    start = _mmwr_week1_start(year)
    weeks = (_mmwr_week1_start(year + 1) - start).days // 7
    if not 1 <= week <= weeks:
        raise ValueError(f"epiweek {epiweek}: MMWR year {year} has weeks 1..{weeks}.")
    return start + dt.timedelta(days=7 * (week - 1) + 6)


def epiweek_of(date: DateLike) -> int:
    """The MMWR week ``YYYYWW`` holding ``date`` (the inverse of :func:`epiweek_end`)."""
    date = _date(_day(date))
    saturday = date + dt.timedelta(days=(5 - date.weekday()) % 7)
    year = saturday.year  # the week belongs to the year that holds its Wednesday and Saturday
    if saturday < _mmwr_week1_start(year):
        year -= 1
    return 100 * year + (saturday - _mmwr_week1_start(year)).days // 7 + 1


# ---------------------------------------------------------------------------- the item


@dataclass(eq=False)
class Series:
    """One region's time series: ``values[t, f]`` is column ``columns[f]`` at date ``t``.

    Access a column by name (``series["deaths"]``, a ``[T]`` tensor), the dates with
    :attr:`dates`, a date range with :meth:`between`.

    Args:
        region: the region's code (a county FIPS code such as ``"25011"``, a state such as
            ``"MA"``).
        days: int64 ``[T]``, the date of each row as days since 1970-01-01, increasing in
            steps of 1 (daily) or 7 (weekly). A weekly row is dated by the last day of its
            week (a Saturday for MMWR weeks).
        values: float64 ``[T, F]``; NaN marks a missing value.
        columns: the ``F`` column names.
        frequency: ``"daily"`` or ``"weekly"``.
    """

    region: str
    days: Tensor
    values: Tensor
    columns: tuple[str, ...]
    frequency: Frequency = "daily"

    def __post_init__(self) -> None:
        self.region = str(self.region)
        if isinstance(self.columns, str):
            raise ValueError(
                f"columns must be a sequence of names, got the str {self.columns!r}; write "
                f"columns=({self.columns!r},)."
            )
        self.columns = tuple(str(c) for c in self.columns)
        try:
            days = torch.as_tensor(self.days)
            self.values = torch.as_tensor(self.values, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(
                f"days and values must be numeric arrays or tensors (days [T] ints, values "
                f"[T, F] floats): {err}."
            ) from None
        if days.is_floating_point() and bool((days != days.round()).any()):
            raise ValueError(
                "days must be whole days since 1970-01-01 (ints), got fractions; see "
                "Series.dates for the dates they mean."
            )
        self.days = days.to(torch.int64)
        if self.frequency not in _FREQUENCIES:
            raise ValueError(f"frequency must be one of {_FREQUENCIES}, got {self.frequency!r}.")
        if len(set(self.columns)) != len(self.columns):
            raise ValueError(f"column names must be unique, got {self.columns}.")
        t = self.days.numel()
        if self.days.dim() != 1 or tuple(self.values.shape) != (t, len(self.columns)):
            raise ValueError(
                f"expected days [T] and values [T, {len(self.columns)}] (one column per name), "
                f"got days {tuple(self.days.shape)} and values {tuple(self.values.shape)}."
            )
        steps = self.days.diff()
        if bool((steps != _STEP[self.frequency]).any()):
            raise ValueError(
                f"a {self.frequency} series has one row every {_STEP[self.frequency]} day(s), "
                "in order; mark missing rows with NaN values instead of leaving them out."
            )

    @property
    def dates(self) -> list[dt.date]:
        """The date of each row (for weekly series, the week's last day)."""
        return [_date(d) for d in self.days.tolist()]

    def column_index(self, column: str) -> int:
        """Position of ``column`` in :attr:`columns`."""
        try:
            return self.columns.index(column)
        except ValueError:
            raise ValueError(
                f"unknown column {column!r}; this series has {list(self.columns)}."
            ) from None

    def __getitem__(self, column: str) -> Tensor:
        """The ``[T]`` values of one column."""
        return self.values[:, self.column_index(column)]

    def between(self, start: DateLike | None = None, end: DateLike | None = None) -> Series:
        """The rows dated ``start <= date <= end`` (either bound may be ``None``)."""
        keep = torch.ones_like(self.days, dtype=torch.bool)
        if start is not None:
            keep &= self.days >= _day(start)
        if end is not None:
            keep &= self.days <= _day(end)
        return Series(self.region, self.days[keep], self.values[keep], self.columns, self.frequency)

    def __len__(self) -> int:
        return self.days.numel()

    def __repr__(self) -> str:
        span = f"{_date(self.days[0])}..{_date(self.days[-1])}" if len(self) else "empty"
        return (
            f"Series(region={self.region!r}, {self.frequency}, {len(self)} rows {span}, "
            f"columns={list(self.columns)})"
        )

    def to_dataframe(self) -> Any:
        """A ``pandas.DataFrame`` indexed by date (named ``"date"``), one column per name.

        ``region`` and ``frequency`` go into ``DataFrame.attrs``. Needs pandas, which is not
        a dependency of lpm-graph.
        """
        try:
            import pandas as pd
        except ImportError as err:
            raise ImportError(
                "Series.to_dataframe() needs pandas, which lpm-graph does not install; "
                "run `pip install pandas`, or use series.values and series.dates."
            ) from err
        index = pd.DatetimeIndex(self.days.numpy().astype("datetime64[D]"), name="date")
        frame = pd.DataFrame(self.values.numpy().copy(), index=index, columns=list(self.columns))
        frame.attrs.update(region=self.region, frequency=self.frequency)
        return frame

    def to_dict(self) -> dict[str, Any]:
        """Plain tensors, strings and lists (what ``torch.load(weights_only=True)`` reads)."""
        return {
            "region": self.region,
            "days": self.days,
            "values": self.values,
            "columns": list(self.columns),
            "frequency": self.frequency,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Series:
        return cls(data["region"], data["days"], data["values"], data["columns"], data["frequency"])


# ---------------------------------------------------------------------------- shared parts


def _bundled(name: str) -> Traversable:
    return resources.files("lpm_graph") / "datasets/data/gradabm_ma" / name


def _choose(what: str, given: Any, valid: Sequence[str], *, ordered: bool) -> list[str]:
    """``given`` as a list of valid names (all of ``valid`` for ``None``); else ValueError."""
    if given is None:
        return list(valid)
    if isinstance(given, str | int):
        given = [given]
    names = [str(g) for g in given]
    unknown = [n for n in names if n not in valid]
    if unknown or not names or len(set(names)) != len(names):
        problem = f"unknown {unknown}" if unknown else "none or repeated names"
        raise ValueError(f"{what}: {problem} in {names}; valid choices: {list(valid)}.")
    return sorted(names) if ordered else names


def _split_dates(split_dates: tuple[DateLike, DateLike]) -> tuple[dt.date, dt.date]:
    try:
        train_end, val_end = (_date(_day(d)) for d in split_dates)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"split_dates must be (train_end, val_end) as dates or 'YYYY-MM-DD', got "
            f"{split_dates!r} ({err})."
        ) from None
    if not train_end < val_end:
        raise ValueError(f"split_dates: train_end {train_end} must come before val_end {val_end}.")
    return train_end, val_end


def _to_float(text: str, missing: tuple[str, ...] = ("",)) -> float:
    return float("nan") if text in missing else float(text)


class _BundledSeries(Dataset):
    """Shared parts of the series datasets: one bundled gzip CSV, splits by date."""

    item_type: ClassVar[type] = Series
    source: ClassVar[str]
    """The bundled file (in ``datasets/data/gradabm_ma``) that is the only raw file."""

    def __init__(
        self,
        root: str | Path | None | bool,
        split: Split | None,
        split_dates: tuple[DateLike, DateLike],
        transform: Transform | None,
        pre_transform: Transform | None,
        force_reload: bool,
    ) -> None:
        if split is not None and split not in _SPLITS:
            raise ValueError(f"split must be None or one of {_SPLITS}, got {split!r}.")
        self.split = split
        self.split_dates = _split_dates(split_dates)
        super().__init__(root, transform, pre_transform, force_reload)

    @property
    def raw_file_names(self) -> list[str]:
        return [self.source]

    @property
    def processed_file_names(self) -> list[str]:
        return ["series.pt"]

    def bundled_file(self, name: str) -> Traversable | None:
        """The raw file is bundled: copied from the package (nothing is downloaded)."""
        return _bundled(self.source) if name == self.source else None

    def cache_args(self) -> dict[str, Any]:
        return {"split": self.split, "split_dates": [d.isoformat() for d in self.split_dates]}

    def _read_rows(self) -> tuple[list[str], list[list[str]]]:
        """Header and rows of the raw CSV (read from the package when ``root=False``)."""
        source = _bundled(self.source) if self.root is None else self.raw_paths[0]
        text = gzip.decompress(source.read_bytes()).decode("utf-8")
        header, *rows = csv.reader(io.StringIO(text, newline=""))
        return header, rows

    def _save(self, items: list[Series]) -> None:
        self.save(items, self.processed_paths[0] if self.root is not None else "")  # "": in memory

    def _split(self, series: Series) -> Series:
        """Rows through ``train_end`` (train), to ``val_end`` (val) or after it (test)."""
        train_end, val_end = self.split_dates
        one = dt.timedelta(days=1)
        if self.split == "train":
            return series.between(None, train_end)
        if self.split == "val":
            return series.between(train_end + one, val_end)
        if self.split == "test":
            return series.between(val_end + one, None)
        return series


def _regular(days: np.ndarray, values: np.ndarray, step: int, where: str) -> tuple[Any, Any]:
    """Rows sorted by date on a regular grid of ``step`` days; absent rows become NaN."""
    order = np.argsort(days, kind="stable")
    days, values = days[order], values[order]
    if (np.diff(days) == 0).any() or ((days - days[0]) % step).any():
        raise ValueError(f"{where}: repeated dates or dates off the {step}-day grid.")
    grid = np.arange(days[0], days[-1] + 1, step, dtype=np.int64)
    out = np.full((grid.size, values.shape[1]), np.nan)
    out[(days - days[0]) // step] = values
    return grid, out


# ---------------------------------------------------------------------------- CountySeries


COUNTY_NAMES = {
    "25001": "Barnstable",
    "25003": "Berkshire",
    "25005": "Bristol",
    "25007": "Dukes",
    "25009": "Essex",
    "25011": "Franklin",
    "25013": "Hampden",
    "25015": "Hampshire",
    "25017": "Middlesex",
    "25019": "Nantucket",
    "25021": "Norfolk",
    "25023": "Plymouth",
    "25025": "Suffolk",
    "25027": "Worcester",
}
"""Census names of the 14 Massachusetts counties, by FIPS code."""

COUNTY_POPULATIONS = {
    "25001": 212_990,
    "25003": 124_944,
    "25005": 565_217,
    "25007": 17_332,
    "25009": 789_034,
    "25011": 70_180,
    "25013": 466_372,
    "25015": 160_830,
    "25017": 1_611_699,
    "25019": 11_399,
    "25021": 706_775,
    "25023": 521_202,
    "25025": 803_907,
    "25027": 830_622,
}
"""Resident population of the 14 Massachusetts counties on 1 July 2019 (US Census Bureau,
Vintage 2019 county estimates), by FIPS code. They sum to 6,892,503, the state's 2019
estimate in the GradABM ``table_population.csv`` (see the data's PROVENANCE.md)."""

COUNTY_COLUMNS = ("cases", "deaths", "doctor_visits", "wili", "wcli")
COUNTS = frozenset({"cases", "deaths"})
"""Columns that are counts: weekly values are sums; the others (signals) are means."""


class CountySeries(_BundledSeries):
    r"""Daily COVID-19 series of the 14 Massachusetts counties, Feb 2020 to 1 Jan 2021.

    One :class:`Series` per county, ordered by FIPS code, with the columns ``cases`` and
    ``deaths`` (new reported counts per day) and the signals ``doctor_visits``, ``wili`` and
    ``wcli`` (public health indicators usable as model features). The file comes from the
    public GradABM repository (MIT licence), bundled with the package; "downloading" copies
    it into ``root/raw``.

    Processing, in this order:

    1. **Missing values.** Blank cells (counts before reporting starts on 2020-02-20, days
       without a signal) are NaN, or ``fill_missing`` when given. Counts are kept as
       reported, negative corrections included. Each county keeps its own dates: Dukes
       (25007) and Nantucket (25019) start on 2020-02-20, the others on 2020-02-01; rows are
       never shifted or padded, so compare counties through :attr:`Series.dates`.
    2. **Smoothing** (daily only). The trailing moving average of window :math:`w` at day
       :math:`t` is the mean of days :math:`t-w+1, \dots, t`. The first :math:`w-1` days,
       whose window is incomplete, are NaN, as is every window holding a NaN (as pandas'
       ``rolling(w).mean()``): each value is the mean of exactly :math:`w` observed days.
    3. **Weekly aggregation** (``frequency="weekly"``). MMWR epidemiological weeks, Sunday
       to Saturday, dated by their Saturday, as :class:`StateILI` and CDC reports. Only
       complete weeks are kept: the partial weeks at both ends are dropped (the last week,
       ending 2021-01-02, is incomplete, so the last weekly row is the week ending
       2020-12-26). Counts are summed over the 7 days and signals averaged; a week with a
       missing day is NaN. Because the weeks are calendar weeks, every county's weeks share
       their dates.
    4. **Split** by date (after smoothing, so a trailing average at the start of a split
       may use earlier days, as it would on the day itself): ``train`` holds the dates up to
       and including ``train_end``, ``val`` those after it up to and including ``val_end``,
       ``test`` those after ``val_end``. The splits do not overlap, and in order they make
       up the whole series.

    The default ``split_dates`` are ``("2020-10-03", "2020-11-14")``: training covers the
    spring wave and the summer lull (246 days from 2020-02-01), validation the onset of the
    second wave (6 weeks), test its winter rise (48 days to 2021-01-01, the last 6 complete
    weeks). Both dates are Saturdays, so a weekly split holds exactly the weeks of the days
    of the daily split.

    **STATS** (computed from the file; totals of the raw daily counts, missing = blank cells):

    .. list-table::
        :header-rows: 1

        * - FIPS
          - county
          - days
          - dates
          - cases
          - deaths
          - missing (cases, deaths, doctor_visits, wili, wcli)
        * - 25001
          - Barnstable
          - 336
          - 2020-02-01..2021-01-01
          - 5,074
          - 238
          - 19, 19, 0, 67, 67
        * - 25003
          - Berkshire
          - 336
          - 2020-02-01..2021-01-01
          - 2,718
          - 138
          - 19, 19, 0, 70, 70
        * - 25005
          - Bristol
          - 336
          - 2020-02-01..2021-01-01
          - 32,346
          - 1,071
          - 19, 19, 0, 65, 65
        * - 25007
          - Dukes
          - 317
          - 2020-02-20..2021-01-01
          - 448
          - 0
          - 0, 0, 255, 317, 317
        * - 25009
          - Essex
          - 336
          - 2020-02-01..2021-01-01
          - 55,159
          - 1,698
          - 19, 19, 0, 65, 65
        * - 25011
          - Franklin
          - 336
          - 2020-02-01..2021-01-01
          - 1,233
          - 92
          - 19, 19, 0, 138, 138
        * - 25013
          - Hampden
          - 336
          - 2020-02-01..2021-01-01
          - 24,480
          - 1,046
          - 19, 19, 0, 65, 65
        * - 25015
          - Hampshire
          - 336
          - 2020-02-01..2021-01-01
          - 3,517
          - 198
          - 19, 19, 0, 67, 67
        * - 25017
          - Middlesex
          - 336
          - 2020-02-01..2021-01-01
          - 72,177
          - 2,729
          - 19, 19, 0, 65, 65
        * - 25019
          - Nantucket
          - 317
          - 2020-02-20..2021-01-01
          - 709
          - 2
          - 0, 0, 317, 317, 317
        * - 25021
          - Norfolk
          - 336
          - 2020-02-01..2021-01-01
          - 25,293
          - 1,302
          - 19, 19, 0, 65, 65
        * - 25023
          - Plymouth
          - 336
          - 2020-02-01..2021-01-01
          - 22,764
          - 1,005
          - 19, 19, 0, 65, 65
        * - 25025
          - Suffolk
          - 336
          - 2020-02-01..2021-01-01
          - 52,218
          - 1,374
          - 19, 19, 0, 65, 65
        * - 25027
          - Worcester
          - 336
          - 2020-02-01..2021-01-01
          - 41,449
          - 1,523
          - 19, 19, 0, 65, 65

    All 14: 4,666 rows, 339,585 cases, 12,416 deaths; 51 daily counts below zero (reporting
    corrections: 19 of cases, 32 of deaths). Weekly: 47 complete weeks (ending 2020-02-08 to
    2020-12-26), 44 for Dukes and Nantucket (from the week ending 2020-02-29).

    Args:
        root: cache folder (see :class:`~lpm_graph.datasets.Dataset`; ``False``: in memory).
        counties: FIPS codes to keep (default: all 14); items are ordered by FIPS code.
        columns: columns to keep, in this order (default: all five).
        smoothing: trailing moving-average window in days (e.g. ``7``); ``None`` keeps the
            raw values. Daily series only.
        frequency: ``"daily"`` or ``"weekly"`` (MMWR weeks, see above).
        split: ``None`` (the whole series), ``"train"``, ``"val"`` or ``"test"``.
        split_dates: ``(train_end, val_end)``, dates or ``"YYYY-MM-DD"``, see above.
        fill_missing: value for blank cells (default: NaN).
        transform: applied to each item on access (as in PyG).
        pre_transform: applied to each item once, before caching (as in PyG).
        force_reload: process again even if a cached copy exists (as in PyG).
    """

    source = "county_data.csv.gz"

    def __init__(
        self,
        root: str | Path | None | bool = None,
        *,
        counties: Sequence[str | int] | str | int | None = None,
        columns: Sequence[str] | str | None = None,
        smoothing: int | None = None,
        frequency: Frequency = "daily",
        split: Split | None = None,
        split_dates: tuple[DateLike, DateLike] = ("2020-10-03", "2020-11-14"),
        fill_missing: float | None = None,
        transform: Transform | None = None,
        pre_transform: Transform | None = None,
        force_reload: bool = False,
    ) -> None:
        self.counties: list[str] = _choose("counties", counties, list(COUNTY_NAMES), ordered=True)
        self.columns: list[str] = _choose("columns", columns, COUNTY_COLUMNS, ordered=False)
        if frequency not in _FREQUENCIES:
            raise ValueError(f"frequency must be one of {_FREQUENCIES}, got {frequency!r}.")
        if smoothing is not None:
            if isinstance(smoothing, bool) or not isinstance(smoothing, int) or smoothing < 1:
                raise ValueError(
                    f"smoothing must be None or a window of >= 1 days, got {smoothing!r}."
                )
            if frequency == "weekly":
                raise ValueError(
                    "smoothing applies to daily series; weekly values are already 7-day "
                    "totals or means (use frequency='daily' with smoothing=7 for a daily "
                    "7-day average)."
                )
        self.smoothing = smoothing
        self.frequency: Frequency = frequency
        if fill_missing is not None and (
            isinstance(fill_missing, bool) or not isinstance(fill_missing, (int, float))
        ):
            raise ValueError(
                f"fill_missing must be None (keep NaN) or a number for blank cells, got "
                f"{fill_missing!r}."
            )
        self.fill_missing = None if fill_missing is None else float(fill_missing)
        super().__init__(root, split, split_dates, transform, pre_transform, force_reload)

    def cache_args(self) -> dict[str, Any]:
        return {
            **super().cache_args(),
            "counties": self.counties,
            "columns": self.columns,
            "smoothing": self.smoothing,
            "frequency": self.frequency,
            "fill_missing": self.fill_missing,
        }

    def process(self) -> None:
        header, rows = self._read_rows()
        if tuple(header) != ("geo_value", "time_value", *COUNTY_COLUMNS):
            raise ValueError(
                f"{self.source} has an unexpected header {header}; reinstall lpm-graph."
            )
        keep = [COUNTY_COLUMNS.index(c) for c in self.columns]
        items = []
        for fips in self.counties:
            mine = [r for r in rows if r[0] == fips]
            days = np.array([_day(r[1]) for r in mine], dtype=np.int64)
            values = np.array([[_to_float(r[2 + k]) for k in keep] for r in mine]).reshape(
                -1, len(keep)
            )
            days, values = _regular(days, values, 1, f"{self.source}, county {fips}")
            if self.fill_missing is not None:
                values[np.isnan(values)] = self.fill_missing
            if self.smoothing is not None:
                values = _trailing_mean(values, self.smoothing)
            if self.frequency == "weekly":
                days, values = _mmwr_weeks(days, values, [c in COUNTS for c in self.columns])
            series = Series(
                fips, torch.from_numpy(days), torch.from_numpy(values), self.columns, self.frequency
            )
            items.append(self._split(series))
        self._save(items)

    def by_fips(self, fips: str | int) -> Series:
        """The series of county ``fips`` (with ``transform`` applied, as ``dataset[i]``)."""
        fips = str(fips)
        if fips not in self.counties:
            raise ValueError(f"unknown county {fips!r}; this dataset has {self.counties}.")
        return self[self.counties.index(fips)]

    def __repr__(self) -> str:
        split = "" if self.split is None else f", split={self.split!r}"
        return f"{type(self).__name__}({len(self)} counties, {self.frequency}{split})"


def _trailing_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of rows ``t-window+1..t`` at row ``t``; NaN where incomplete or holding NaN."""
    out = np.full_like(values, np.nan)
    if values.shape[0] >= window:
        windows = np.lib.stride_tricks.sliding_window_view(values, window, axis=0)  # [T-w+1, F, w]
        out[window - 1 :] = windows.mean(axis=-1)
    return out


def _mmwr_weeks(days: np.ndarray, values: np.ndarray, is_count: list[bool]) -> tuple[Any, Any]:
    """Complete Sunday-to-Saturday weeks: sums of counts, means of signals, dated by Saturday."""
    # 1970-01-01 was a Thursday: Sundays are the days = 3 (mod 7), Saturdays the days = 2.
    first = int(days[0]) + (3 - int(days[0])) % 7  # first Sunday in the series
    last = int(days[-1]) - (int(days[-1]) - 2) % 7  # last Saturday in the series
    weeks = max((last - first + 1) // 7, 0)
    start = first - int(days[0])
    block = values[start : start + 7 * weeks].reshape(weeks, 7, values.shape[1])  # [W, 7, F]
    out = np.where(np.array(is_count), block.sum(axis=1), block.mean(axis=1))
    return first + 6 + 7 * np.arange(weeks, dtype=np.int64), out


# ---------------------------------------------------------------------------- StateILI


# fmt: off
STATES = (
    "AK", "AL", "AR", "AZ", "CA", "CO", "CT", "DC", "DE", "FL", "GA", "HI", "IA", "ID", "IL",
    "IN", "KS", "KY", "LA", "MA", "MD", "ME", "MI", "MN", "MO", "MS", "MT", "NC", "ND", "NE",
    "NH", "NJ", "NM", "NV", "NY", "OH", "OK", "OR", "PA", "RI", "SC", "SD", "TN", "TX", "UT",
    "VA", "VT", "WA", "WI", "WV", "WY",
)
"""The 51 regions of :class:`StateILI`: the states and DC, by two-letter code."""
# fmt: on
ILI_COLUMNS = (
    "symptom:Fever",
    "symptom:Low-grade fever",
    "symptom:Cough",
    "symptom:Sore throat",
    "symptom:Headache",
    "symptom:Fatigue",
    "symptom:Vomiting",
    "symptom:Diarrhea",
    "symptom:Shortness of breath",
    "symptom:Chest pain",
    "symptom:Dizziness",
    "symptom:Confusion",
    "symptom:Generalized tonic\u2013clonic seizure",  # an en dash, as in the source
    "symptom:Weakness",
    "ili",
)
"""The columns of :class:`StateILI`, under the source's names."""


class StateILI(_BundledSeries):
    r"""Weekly influenza-like illness (ILI) and symptom search trends of 51 US regions.

    One weekly :class:`Series` per region (the 50 states and DC, by two-letter code, in
    alphabetical order) from MMWR week 2017-34 to 2021-15. Each row is dated by the Saturday
    that ends its MMWR week (:func:`epiweek_end` of the file's ``epiweek``; the file's
    ``year`` and ``month`` columns are left out, the dates carry them). Columns: the 14
    ``symptom:*`` search-trend signals and ``ili``, the percentage of outpatient visits for
    influenza-like illness, all under the source's names. Florida reports no ILI (``X`` in
    the source): its ``ili`` is NaN. The file comes from the public GradABM repository (MIT
    licence), bundled with the package.

    Splits are by date as in :class:`CountySeries`: ``train`` up to and including
    ``train_end``, ``val`` up to and including ``val_end``, ``test`` after. The defaults,
    ``("2019-09-28", "2020-09-26")``, follow flu seasons (MMWR week 40 to week 39):
    training holds the 2017/18 and 2018/19 seasons (110 weeks, from week 2017-34), validation
    the 2019/20 season (52 weeks), test the 2020/21 season to week 2021-15 (29 weeks).

    **STATS** (computed from the file):

    .. list-table::
        :header-rows: 1

        * - regions
          - weeks per region
          - dates (week ends)
          - columns
          - missing values
          - MA: mean ili
        * - 51
          - 191 (none absent)
          - 2017-08-26..2021-04-17
          - 15 (14 symptom signals, ili)
          - 191 (ili of FL)
          - 1.649

    Args:
        root: cache folder (see :class:`~lpm_graph.datasets.Dataset`; ``False``: in memory).
        regions: two-letter codes to keep (default: all 51); items are in alphabetical order.
        columns: columns to keep, in this order (default: all 15).
        split: ``None`` (the whole series), ``"train"``, ``"val"`` or ``"test"``.
        split_dates: ``(train_end, val_end)``, dates or ``"YYYY-MM-DD"``.
        transform: applied to each item on access (as in PyG).
        pre_transform: applied to each item once, before caching (as in PyG).
        force_reload: process again even if a cached copy exists (as in PyG).
    """

    source = "flu_state_data.csv.gz"

    def __init__(
        self,
        root: str | Path | None | bool = None,
        *,
        regions: Sequence[str] | str | None = None,
        columns: Sequence[str] | str | None = None,
        split: Split | None = None,
        split_dates: tuple[DateLike, DateLike] = ("2019-09-28", "2020-09-26"),
        transform: Transform | None = None,
        pre_transform: Transform | None = None,
        force_reload: bool = False,
    ) -> None:
        self.regions: list[str] = _choose("regions", regions, STATES, ordered=True)
        self.columns: list[str] = _choose("columns", columns, ILI_COLUMNS, ordered=False)
        super().__init__(root, split, split_dates, transform, pre_transform, force_reload)

    def cache_args(self) -> dict[str, Any]:
        return {**super().cache_args(), "regions": self.regions, "columns": self.columns}

    def process(self) -> None:
        header, rows = self._read_rows()
        if tuple(header) != ("region", "epiweek", "year", "month", *ILI_COLUMNS):
            raise ValueError(
                f"{self.source} has an unexpected header {header}; reinstall lpm-graph."
            )
        keep = [4 + ILI_COLUMNS.index(c) for c in self.columns]
        weeks: dict[str, int] = {}  # epiweek -> day number of its Saturday
        items = []
        for region in self.regions:
            mine = [r for r in rows if r[0] == region]
            days = np.array([weeks.setdefault(r[1], _day(epiweek_end(r[1]))) for r in mine])
            values = np.array([[_to_float(r[k], ("", "X")) for k in keep] for r in mine])
            days, values = _regular(days, values.reshape(-1, len(keep)), 7, f"region {region}")
            series = Series(
                region, torch.from_numpy(days), torch.from_numpy(values), self.columns, "weekly"
            )
            items.append(self._split(series))
        self._save(items)

    def by_region(self, region: str) -> Series:
        """The series of ``region`` (with ``transform`` applied, as ``dataset[i]``)."""
        if region not in self.regions:
            raise ValueError(f"unknown region {region!r}; this dataset has {self.regions}.")
        return self[self.regions.index(region)]

    def __repr__(self) -> str:
        split = "" if self.split is None else f", split={self.split!r}"
        return f"{type(self).__name__}({len(self)} regions{split})"
