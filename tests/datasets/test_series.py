"""CountySeries and StateILI against the CSV files read independently; MMWR weeks; the cache."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import math
import sys
from importlib import resources

import pytest
import torch

from lpm_graph.datasets import CountySeries, Series, StateILI
from lpm_graph.datasets.series import epiweek_end, epiweek_of

COLUMNS = ["cases", "deaths", "doctor_visits", "wili", "wcli"]
ONE = dt.timedelta(days=1)


def source_bytes(name: str) -> bytes:
    """A source file as bundled with the package (gzip-compressed), decompressed; that these
    are GradABM's originals is checked in test_bundled.py (checksums)."""
    gz = resources.files("lpm_graph") / "datasets/data/gradabm_ma" / f"{name}.gz"
    return gzip.decompress(gz.read_bytes())


def read_csv(name: str) -> list[dict[str, str]]:
    """A bundled source file read independently of the package, with the csv module."""
    text = source_bytes(name).decode("utf-8")
    return list(csv.DictReader(io.StringIO(text, newline="")))


@pytest.fixture(scope="module")
def county_csv() -> dict[str, dict[dt.date, dict[str, float]]]:
    """``{fips: {date: {column: value}}}``, NaN for blanks."""
    out: dict[str, dict[dt.date, dict[str, float]]] = {}
    for row in read_csv("county_data.csv"):
        day = dt.date.fromisoformat(row["time_value"])
        out.setdefault(row["geo_value"], {})[day] = {
            c: float(row[c]) if row[c] else math.nan for c in COLUMNS
        }
    return out


@pytest.fixture(scope="module")
def daily() -> CountySeries:
    return CountySeries(root=False)


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def week_days(saturday: dt.date) -> list[dt.date]:
    return [saturday - k * ONE for k in range(6, -1, -1)]


# ---------------------------------------------------------------------------- daily, raw


def test_raw_daily_deaths_of_25011_match_the_csv(county_csv, daily):
    series = daily.by_fips("25011")
    rows = county_csv["25011"]
    assert len(series) == 336 == len(rows)
    assert series.dates == sorted(rows)
    deaths = series["deaths"].tolist()
    assert all(same(deaths[t], rows[d]["deaths"]) for t, d in enumerate(series.dates))
    raw_total = sum(r["deaths"] for r in rows.values() if not math.isnan(r["deaths"]))
    assert series["deaths"].nansum().item() == raw_total == 92
    assert (series["deaths"] < 0).any(), "negative reporting corrections are kept as they are"


def test_every_county_and_column_matches_the_csv(county_csv, daily):
    assert daily.counties == sorted(county_csv) and len(daily) == 14
    for series in daily:
        rows = county_csv[series.region]
        assert series.frequency == "daily" and series.columns == tuple(COLUMNS)
        assert series.dates == sorted(rows)
        for t, day in enumerate(series.dates):
            for f, column in enumerate(COLUMNS):
                assert same(series.values[t, f].item(), rows[day][column]), (series.region, day)


def test_short_counties_align_by_date_not_by_row(county_csv, daily):
    long, short = daily.by_fips("25011"), daily.by_fips(25007)
    assert len(short) == 317 and short.dates[0] == dt.date(2020, 2, 20)
    assert short.dates == long.dates[19:]  # same calendar days, not the first 317 rows
    on_day = {d: t for t, d in enumerate(short.dates)}
    feb20 = dt.date(2020, 2, 20)
    assert short["cases"][on_day[feb20]].item() == county_csv["25007"][feb20]["cases"]
    assert len(daily.by_fips("25019")) == 317


def test_fill_missing_replaces_only_blanks(daily):
    filled = CountySeries(root=False, counties=["25011"], fill_missing=-1.0)[0]
    raw = daily.by_fips("25011")
    blank = torch.isnan(raw.values)
    assert blank.any() and not torch.isnan(filled.values).any()
    assert (filled.values[blank] == -1.0).all()
    assert torch.equal(filled.values[~blank], raw.values[~blank])


def test_column_selection_keeps_the_given_order(daily):
    series = CountySeries(root=False, counties="25011", columns=["wili", "deaths"])[0]
    assert series.columns == ("wili", "deaths")
    torch.testing.assert_close(series["deaths"], daily.by_fips("25011")["deaths"], equal_nan=True)


# ---------------------------------------------------------------------------- weekly, smoothing


@pytest.mark.parametrize("fips", ["25011", "25007"])
def test_weekly_sums_counts_and_averages_signals_over_mmwr_weeks(county_csv, fips):
    weekly = CountySeries(root=False, counties=[fips], frequency="weekly")[0]
    rows = county_csv[fips]
    assert weekly.frequency == "weekly"
    assert all(d.weekday() == 5 for d in weekly.dates)  # dated by the Saturday
    # every complete Sunday-Saturday week of the CSV, and only those
    complete = [d for d in rows if d.weekday() == 5 and all(x in rows for x in week_days(d))]
    assert weekly.dates == complete
    assert weekly.dates[-1] == dt.date(2020, 12, 26)  # the week ending 2021-01-02 is partial
    for t, saturday in enumerate(weekly.dates):
        days = [rows[d] for d in week_days(saturday)]
        for f, column in enumerate(COLUMNS):
            values = [r[column] for r in days]
            expect = sum(values) if column in ("cases", "deaths") else sum(values) / 7
            assert same(weekly.values[t, f].item(), expect) or math.isclose(
                weekly.values[t, f].item(), expect, rel_tol=1e-12
            ), (fips, saturday, column)
    # weekly deaths summed back = daily deaths summed over the same complete weeks
    observed = [
        d for d in weekly.dates if not any(math.isnan(rows[x]["deaths"]) for x in week_days(d))
    ]
    daily_total = sum(rows[x]["deaths"] for d in observed for x in week_days(d))
    assert weekly["deaths"].nansum().item() == daily_total and len(observed) >= 44


def test_seven_day_average_times_seven_is_the_window_sum(county_csv):
    smooth = CountySeries(root=False, counties=["25011"], smoothing=7)[0]
    rows = county_csv["25011"]
    days = sorted(rows)
    cases = smooth["cases"]
    assert torch.isnan(cases[:6]).all()  # incomplete windows at the start
    checked = 0
    for t in range(6, len(days)):
        window = [rows[d]["cases"] for d in days[t - 6 : t + 1]]
        if any(math.isnan(v) for v in window):
            assert math.isnan(cases[t].item())
        else:
            assert math.isclose(7 * cases[t].item(), sum(window), rel_tol=1e-12, abs_tol=1e-9)
            checked += 1
    assert checked > 300


def test_weekly_and_smoothing_do_not_combine():
    with pytest.raises(ValueError, match="daily"):
        CountySeries(root=False, frequency="weekly", smoothing=7)


# ---------------------------------------------------------------------------- splits


@pytest.mark.parametrize("frequency", ["daily", "weekly"])
def test_splits_are_disjoint_and_make_up_the_series(frequency):
    whole = CountySeries(root=False, frequency=frequency)
    parts = [
        CountySeries(root=False, frequency=frequency, split=s) for s in ("train", "val", "test")
    ]
    for i, series in enumerate(whole):
        pieces = [p[i] for p in parts]
        assert all(len(p) > 0 for p in pieces)
        assert pieces[0].dates[-1] < pieces[1].dates[0] and pieces[1].dates[-1] < pieces[2].dates[0]
        assert torch.equal(torch.cat([p.days for p in pieces]), series.days)
        torch.testing.assert_close(
            torch.cat([p.values for p in pieces]), series.values, rtol=0, atol=0, equal_nan=True
        )
    train_end, val_end = dt.date(2020, 10, 3), dt.date(2020, 11, 14)  # the documented defaults
    assert parts[0][0].dates[-1] == train_end and parts[1][0].dates[-1] == val_end


def test_split_dates_move_the_boundaries():
    val = CountySeries(
        root=False, counties="25011", split="val", split_dates=("2020-06-30", "2020-07-31")
    )
    assert val[0].dates[0] == dt.date(2020, 7, 1) and val[0].dates[-1] == dt.date(2020, 7, 31)


# ---------------------------------------------------------------------------- the cache


def test_second_construction_loads_the_cache_and_arguments_change_the_file(tmp_path, monkeypatch):
    first = CountySeries(root=tmp_path)
    raw = (tmp_path / "raw" / "county_data.csv.gz").read_bytes()
    bundled = resources.files("lpm_graph") / "datasets/data/gradabm_ma/county_data.csv.gz"
    assert raw == bundled.read_bytes()
    path = first.processed_paths[0]
    assert path.exists()

    def must_not_run(self):
        raise AssertionError("process() ran although the cache exists")

    with monkeypatch.context() as m:
        m.setattr(CountySeries, "process", must_not_run)
        again = CountySeries(root=tmp_path)
    for a, b in zip(first, again):
        assert a.region == b.region and a.columns == b.columns and torch.equal(a.days, b.days)
        torch.testing.assert_close(a.values, b.values, rtol=0, atol=0, equal_nan=True)

    smooth = CountySeries(root=tmp_path, smoothing=7)
    assert smooth.processed_paths[0] != path and smooth.processed_paths[0].exists()
    assert not torch.equal(smooth[0].values.nan_to_num(), first[0].values.nan_to_num())


def test_state_ili_caches_too(tmp_path, monkeypatch):
    first = StateILI(root=tmp_path, regions=["MA"])
    monkeypatch.setattr(StateILI, "process", lambda self: pytest.fail("process() ran again"))
    again = StateILI(root=tmp_path, regions=["MA"])
    torch.testing.assert_close(first[0].values, again[0].values, rtol=0, atol=0)


# ---------------------------------------------------------------------------- StateILI


@pytest.mark.parametrize(
    ("epiweek", "end"),
    [
        (202001, dt.date(2020, 1, 4)),
        (201901, dt.date(2019, 1, 5)),
        (201453, dt.date(2015, 1, 3)),
        (201734, dt.date(2017, 8, 26)),
        (202053, dt.date(2021, 1, 2)),
        (202101, dt.date(2021, 1, 9)),
        ("201801", dt.date(2018, 1, 6)),
    ],
)
def test_epiweek_end_known_dates(epiweek, end):
    assert epiweek_end(epiweek) == end
    assert epiweek_of(end) == int(epiweek) and epiweek_of(end - 6 * ONE) == int(epiweek)


@pytest.mark.parametrize("epiweek", [201753, 201900, 202054, 202153])
def test_epiweek_that_does_not_exist(epiweek):
    with pytest.raises(ValueError, match="has weeks 1..5"):
        epiweek_end(epiweek)


def test_epiweeks_follow_the_four_day_rule():
    """Brute force: week 1 is the first Sunday-started week with >= 4 days in the year."""
    week1_end = {}
    for year in range(2012, 2025):
        sunday = dt.date(year - 1, 12, 25)
        while sunday.weekday() != 6 or sum((sunday + k * ONE).year == year for k in range(7)) < 4:
            sunday += ONE
        week1_end[year] = sunday + 6 * ONE
        assert epiweek_end(100 * year + 1) == week1_end[year]
    day = dt.date(2013, 1, 1)
    while day < dt.date(2024, 1, 1):
        saturday = day + ((5 - day.weekday()) % 7) * ONE
        year = max(y for y in week1_end if week1_end[y] <= saturday)
        expect = 100 * year + (saturday - week1_end[year]).days // 7 + 1
        assert epiweek_of(day) == expect and epiweek_end(expect) == saturday, day
        day += ONE


def test_state_ili_matches_the_csv():
    rows = read_csv("flu_state_data.csv")
    ili = StateILI(root=False)
    assert len(ili) == 51 and ili.regions == sorted({r["region"] for r in rows})
    ma = ili.by_region("MA")
    mine = [r for r in rows if r["region"] == "MA"]
    assert len(ma) == 191 and ma.frequency == "weekly"
    assert ma.dates == [epiweek_end(int(r["epiweek"])) for r in mine]
    assert ma["ili"].tolist() == [float(r["ili"]) for r in mine]
    assert ma["symptom:Cough"].tolist() == [float(r["symptom:Cough"]) for r in mine]
    assert torch.isnan(ili.by_region("FL")["ili"]).all()  # "X": not reported
    assert sum(int(torch.isnan(s.values).sum()) for s in ili) == 191


def test_state_ili_splits_follow_flu_seasons():
    whole = StateILI(root=False, regions="MA")[0]
    parts = [StateILI(root=False, regions="MA", split=s)[0] for s in ("train", "val", "test")]
    assert [len(p) for p in parts] == [110, 52, 29]
    assert epiweek_of(parts[1].dates[0]) == 201940 and epiweek_of(parts[2].dates[0]) == 202040
    assert torch.equal(torch.cat([p.days for p in parts]), whole.days)


# ---------------------------------------------------------------------------- Series, errors


def test_series_round_trip_and_transform(daily):
    series = daily.by_fips("25011")
    back = Series.from_dict(series.to_dict())
    assert back.region == "25011" and back.columns == series.columns and back.dates == series.dates
    torch.testing.assert_close(back.values, series.values, rtol=0, atol=0, equal_nan=True)
    assert "25011" in repr(series) and "2020-02-01..2021-01-01" in repr(series)
    doubled = CountySeries(
        root=False, counties="25011", transform=lambda s: s.between(end="2020-02-29")
    )
    assert len(doubled.by_fips("25011")) == 29


def test_to_dataframe(daily, monkeypatch):
    pd = pytest.importorskip("pandas")
    frame = daily.by_fips("25011").to_dataframe()
    assert list(frame.columns) == COLUMNS and len(frame) == 336
    assert frame.index[0] == pd.Timestamp("2020-02-01") and frame.attrs["region"] == "25011"
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match="pip install pandas"):
        daily.by_fips("25011").to_dataframe()


def test_series_checks_its_invariants():
    with pytest.raises(ValueError, match="one row every 1 day"):
        Series("x", torch.tensor([0, 2]), torch.zeros(2, 1), ("a",))
    with pytest.raises(ValueError, match="values"):
        Series("x", torch.tensor([0, 1]), torch.zeros(2, 2), ("a",))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"counties": ["99999"]}, r"unknown \['99999'\].*25001"),
        ({"columns": ["death"]}, r"unknown \['death'\].*'deaths'"),
        ({"split": "training"}, r"'train', 'val', 'test'"),
        ({"frequency": "monthly"}, r"'daily', 'weekly'"),
        ({"smoothing": 0}, "window"),
        ({"split_dates": ("2020-11-14", "2020-10-03")}, "must come before"),
        ({"split_dates": ("2020-13-01", "2020-11-14")}, "YYYY-MM-DD"),
    ],
)
def test_bad_arguments_name_the_valid_choices(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CountySeries(root=False, **kwargs)


def test_bad_lookups_name_the_valid_choices(daily):
    with pytest.raises(ValueError, match="25027"):
        daily.by_fips("25000")
    with pytest.raises(ValueError, match="'wcli'"):
        daily[0]["foo"]
    with pytest.raises(ValueError, match="'WY'"):
        StateILI(root=False, regions=["XX"])
    with pytest.raises(ValueError, match="'ili'"):
        StateILI(root=False, columns=["flu"])


def test_county_populations_sum_to_the_state_estimate():
    from lpm_graph.datasets.series import COUNTY_NAMES, COUNTY_POPULATIONS

    assert set(COUNTY_POPULATIONS) == set(COUNTY_NAMES)
    # the Massachusetts row of GradABM's table_population.csv (2019 estimate)
    assert sum(COUNTY_POPULATIONS.values()) == 6_892_503
