"""The analysis recovers known truth from a whole simulated run, and says so.

The run goes through the real command line, orchestrator and store into a DuckDB
file; the analysis reads it back through the views. The seeds are fixed: at run seed
0 with the profile's parameters every interval below was checked to hold its true
value (at 95 % a few misses per run are expected at other seeds; the coverage
benchmark, benchmarks/coverage.py, measures the rate over 200 seeds).
"""

import json
import re

import numpy as np
import pytest

from muse_eval.analysis import analyze_runs
from muse_eval.analysis.estimates import (
    bootstrap_curve,
    clustered_wilson,
    design_effect,
    fit_conformity_curve,
    logistic,
)
from muse_eval.cli import main
from muse_eval.store import Store

ITEMS = 200
CHECKED = (
    "rate",
    "intercept",
    "slope",
    "slope_bootstrap",
    "at_zero",
    "at_zero_empirical",
    "at_one",
    "rise",
    "baseline_share",
)


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    out, _ = capsys.readouterr()
    return code, out


@pytest.fixture(scope="module")
def simulated_db(tmp_path_factory) -> str:
    db = tmp_path_factory.mktemp("sim") / "muse.duckdb"
    code = main(
        [
            "--provider",
            "simulated",
            "--task",
            "mmlu",
            "--limit",
            str(ITEMS),
            "--db",
            str(db),
            "-q",
        ]
    )
    assert code == 0
    return str(db)


@pytest.fixture(scope="module")
def analysis(simulated_db):
    return analyze_runs(Store(simulated_db), bootstrap=1000, seed=0)


def test_the_run_is_stored_as_simulated(simulated_db) -> None:
    _, rows = Store(simulated_db).query("SELECT simulated, provider_info FROM runs")
    assert len(rows) == 1
    simulated, info = rows[0]
    assert simulated is True
    assert json.loads(info)["parameters"]["conformity"]["none/implausible"] == {
        "intercept": -2.2,
        "slope": 1.0,
    }


def test_every_interval_holds_the_true_value(analysis) -> None:
    result = analysis.runs[0]
    assert result.run.simulated and analysis.simulated
    checked = 0
    for component in result.components:
        for name in CHECKED:
            estimate = getattr(component, name)
            assert estimate.truth is not None, (component.condition, name)
            assert estimate.covers_truth, (component.condition, name, estimate)
            checked += 1
    assert checked == 10 * len(CHECKED)
    terms = {t.name: t.estimate for t in result.ablation.terms}
    assert set(terms) == {
        "intercept",
        "expertise",
        "plausibility",
        "u",
        "u:expertise",
        "u:plausibility",
    }
    for name, estimate in terms.items():
        assert estimate.covers_truth, (name, estimate)


def test_estimates_are_close_to_the_truth(analysis) -> None:
    for c in analysis.runs[0].components:
        assert abs(c.at_zero.value - c.at_zero.truth) < 0.06, c.condition
        assert abs(c.slope.value - c.slope.truth) < 0.75, c.condition
        assert abs(c.rise.value - c.rise.truth) < 0.12, c.condition
        # Intervals are informative, not merely wide enough to cover.
        assert c.at_zero.high - c.at_zero.low < 0.15
        assert c.slope.high - c.slope.low < 1.3
        # The Wald and bootstrap intervals of the slope agree.
        assert abs(c.slope.low - c.slope_bootstrap.low) < 0.15
        assert c.bootstrap_failed == 0


def test_the_trend_tests_find_the_true_trends(analysis) -> None:
    ablation = analysis.runs[0].ablation
    terms = {t.name: t for t in ablation.terms}
    for name in ("expertise", "plausibility", "u:plausibility"):
        assert terms[name].p_value < 0.001, name
        assert terms[name].estimate.value > 0
    assert {t.factor for t in ablation.tests} == {"expertise", "plausibility"}
    assert all(t.p_value < 1e-10 and t.df == 2 for t in ablation.tests)
    assert ablation.items == ITEMS


def test_estimates_state_what_they_rest_on(analysis, simulated_db) -> None:
    _, rows = Store(simulated_db).query(
        "SELECT condition, count(DISTINCT item_id), count(*) FILTER (WHERE parsed), "
        "count(DISTINCT item_id) FILTER (WHERE uncertainty = 0) "
        "FROM conformity_replies GROUP BY condition"
    )
    expected = {r[0]: r[1:] for r in rows}
    for c in analysis.runs[0].components:
        basis = c.basis
        assert (basis.items, basis.parsed_replies, basis.items_at_zero) == expected[
            c.condition
        ]
        assert (basis.samples, basis.temperature) == (10, 1.0)
        assert (basis.pushback_samples, basis.pushback_temperature) == (5, 1.0)
        assert 0 < basis.reply_parse_failure_rate < 0.08
        assert 0 < basis.sample_parse_failure_rate < 0.08


def test_observed_u0_rate_is_the_rate_sql_gives(analysis, simulated_db) -> None:
    _, rows = Store(simulated_db).query(
        "SELECT condition, avg(yielded::INT) FILTER (WHERE parsed AND uncertainty = 0),"
        " avg(yielded::INT) FILTER (WHERE parsed) FROM conformity_replies "
        "GROUP BY condition"
    )
    by_condition = {r[0]: r[1:] for r in rows}
    for c in analysis.runs[0].components:
        at_zero, overall = by_condition[c.condition]
        assert c.at_zero_empirical.value == pytest.approx(at_zero, abs=1e-12)
        assert c.rate.value == pytest.approx(overall, abs=1e-12)
        # A logistic fit with an intercept reproduces the overall rate.
        assert c.baseline_share.value == pytest.approx(c.at_zero.value / overall)


def test_flip_measures_match_the_flips_view(analysis, simulated_db) -> None:
    names, rows = Store(simulated_db).query("SELECT * FROM flips")
    view = {r[names.index("condition")]: dict(zip(names, r, strict=True)) for r in rows}
    for f in analysis.runs[0].flips:
        row = view[f.condition]
        assert f.flip_rate.value == pytest.approx(row["flip_rate"])
        assert f.accuracy_before.value == pytest.approx(row["accuracy_before"])
        assert f.accuracy_after.value == pytest.approx(row["accuracy_after"])
        assert f.n_correct_challenged == row["n_correct_challenged"]
        if row["kept_correct_rate"] is not None:
            assert f.kept_correct.value == pytest.approx(row["kept_correct_rate"])
        if row["accepted_correct_rate"] is not None:
            assert f.accepted_correct.value == pytest.approx(
                row["accepted_correct_rate"]
            )
    correct = [f for f in analysis.runs[0].flips if f.plausibility == "correct"]
    assert correct and all(f.accuracy_before.value == 0.0 for f in correct)
    control = next(f for f in analysis.runs[0].flips if f.condition == "control")
    assert control.kept_correct.value is None and control.n_correct_challenged == 0


def test_other_measures_are_fitted_and_correlated(analysis) -> None:
    result = analysis.runs[0]
    measures = {c.measure for c in result.other_measures}
    assert measures == {"letter_entropy", "disagreement"}
    assert all(c.slope.value is not None for c in result.other_measures)
    correlations = {c.measure: c for c in result.correlations}
    assert correlations["disagreement"].spearman > 0.9
    assert 0.6 < correlations["letter_entropy"].spearman < 0.99
    assert correlations["letter_entropy"].items == ITEMS


def test_analyze_prints_simulated_and_json_gives_the_same_numbers(
    analysis, simulated_db, capsys
) -> None:
    code, out = run_cli(["analyze", "--db", simulated_db], capsys)
    assert code == 0
    assert "SIMULATED" in out
    assert "expert/plausible" in out and "recovery of the known parameters" in out
    code, out = run_cli(["analyze", "--db", simulated_db, "--format", "json"], capsys)
    data = json.loads(out)
    assert data["simulated"] is True
    first = data["runs"][0]["components"][0]
    assert first["condition"] == "control"
    assert first["slope"]["value"] == pytest.approx(
        analysis.runs[0].components[0].slope.value
    )
    assert first["rise"]["low"] == pytest.approx(
        analysis.runs[0].components[0].rise.low
    )


def test_a_run_prefix_selects_it_and_an_unknown_run_is_one_sentence(
    simulated_db, capsys
) -> None:
    code, out = run_cli(
        ["analyze", "--db", simulated_db, "--run", "mmlu-sim", "--format", "json"],
        capsys,
    )
    assert code == 0 and json.loads(out)["runs"][0]["run"]["run_id"].startswith(
        "mmlu-sim"
    )
    code = main(["analyze", "--db", simulated_db, "--run", "nope"])
    err = capsys.readouterr().err
    assert code == 1 and "No run 'nope'" in err and "Traceback" not in err


def test_report_is_one_offline_page_with_its_plots(
    simulated_db, tmp_path, capsys
) -> None:
    out_dir = tmp_path / "report"
    code, out = run_cli(
        ["report", "--db", simulated_db, "--out", str(out_dir), "--bootstrap", "200"],
        capsys,
    )
    assert code == 0 and "SIMULATED" in out
    page = (out_dir / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 3
    assert not re.search(r"""(src|href)=["']https?:""", page)
    assert page.count("SIMULATED") >= 5
    assert "too few items (" not in page
    pngs = sorted(p.name for p in out_dir.glob("*.png"))
    assert len(pngs) == 3 and all(name.startswith("mmlu-simulated") for name in pngs)
    assert all((out_dir / name).read_bytes()[:4] == b"\x89PNG" for name in pngs)


def test_too_few_items_say_so_instead_of_a_number(tmp_path, capsys) -> None:
    db = tmp_path / "small.duckdb"
    assert main(["--provider", "simulated", "--limit", "6", "--db", str(db), "-q"]) == 0
    capsys.readouterr()
    small = analyze_runs(Store(db), bootstrap=50)
    for c in small.runs[0].components:
        assert c.slope.value is None and c.at_zero.value is None
        assert c.slope.note.startswith("too few items (")
        if c.basis.items < 5:
            assert c.rate.value is None and "too few items" in c.rate.note
    code, out = run_cli(["analyze", "--db", str(db)], capsys)
    assert code == 0 and "too few items (6 < 8)" in out
    assert small.runs[0].ablation.note == "too few items (6 < 8)"


def test_two_runs_get_a_model_by_model_figure(simulated_db, tmp_path, capsys) -> None:
    db = tmp_path / "two.duckdb"
    for seed in ("1", "2"):
        assert (
            main(
                [
                    "--provider",
                    "simulated",
                    "--limit",
                    "30",
                    "--seed",
                    seed,
                    "--db",
                    str(db),
                    "-q",
                    "--sim-params",
                    '{"certain_share": 0.5}',
                ]
            )
            == 0
        )
    capsys.readouterr()
    code, _ = run_cli(
        ["report", "--db", str(db), "--out", str(tmp_path / "r"), "--bootstrap", "50"],
        capsys,
    )
    assert code == 0
    assert (tmp_path / "r" / "models.png").is_file()
    _, rows = Store(db).query("SELECT provider_info FROM runs")
    assert [json.loads(r[0])["parameters"]["certain_share"] for r in rows] == [0.5, 0.5]


def test_vectorized_bootstrap_refits_match_statsmodels() -> None:
    import statsmodels.api as sm

    rng = np.random.default_rng(3)
    u = rng.uniform(0, 1, 120)
    u[:40] = 0.0
    n = np.full(120, 5.0)
    k = rng.binomial(5, logistic(-1.0 + 1.5 * u)).astype(float)
    curve = fit_conformity_curve(u, k, n, [str(i) for i in range(120)])
    draws = bootstrap_curve(
        u,
        k,
        n,
        (curve.intercept, curve.slope),
        replicates=3,
        rng=np.random.default_rng(9),
    )
    weights = np.random.default_rng(9).multinomial(120, np.full(120, 1 / 120), size=3)
    for index in range(3):
        fit = sm.GLM(
            np.column_stack([k, n - k]),
            np.column_stack([np.ones(120), u]),
            family=sm.families.Binomial(),
            freq_weights=weights[index].astype(float),
        ).fit()
        assert draws.intercept[index] == pytest.approx(fit.params[0], abs=1e-8)
        assert draws.slope[index] == pytest.approx(fit.params[1], abs=1e-8)


def test_design_effect_grows_with_clustering_only() -> None:
    rng = np.random.default_rng(0)
    trials = np.full(300, 5.0)
    independent = rng.binomial(5, 0.3, 300).astype(float)
    assert design_effect(independent, trials) < 1.15
    clustered = rng.binomial(5, rng.choice([0.05, 0.6], 300)).astype(float)
    assert design_effect(clustered, trials) > 1.8
    rate, low, high, deff = clustered_wilson(clustered, trials)
    assert low < rate < high and deff > 1.8
    assert design_effect([3.0], [5.0]) == 1.0


def test_new_simulation_parameters_make_a_new_run(tmp_path, capsys) -> None:
    db = str(tmp_path / "params.duckdb")
    base = ["--provider", "simulated", "--limit", "3", "--db", db, "-q"]
    assert main([*base, "--sim-params", '{"certain_share": 0.1}']) == 0
    assert main([*base, "--sim-params", '{"certain_share": 0.9}']) == 0
    assert main([*base, "--sim-params", '{"certain_share": 0.9}']) == 0
    capsys.readouterr()
    _, rows = Store(db).query("SELECT count(*) FROM runs")
    assert rows[0][0] == 2


def test_analysis_is_reproducible_to_the_last_digit(simulated_db, capsys) -> None:
    argv = ["analyze", "--db", simulated_db, "--format", "json", "--bootstrap", "100"]
    outputs = {run_cli(argv, capsys)[1] for _ in range(3)}
    assert len(outputs) == 1
