"""customer-context cost: the arithmetic on hand-computed workloads, and every per-unit figure read from a
benchmark result file (a missing one is an error naming the benchmark to run)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from customer_context.errors import ConfigError
from customer_context_devtools import cli, cost

from tests.conftest import REPO

RESULTS = REPO / "bench" / "results"
PRICES = yaml.safe_load(cost.PRICES_FILE.read_text())["prices"]
MONTH_S = 30 * 86400


def price(name: str) -> float:
    return PRICES[name]["price"] / PRICES[name].get("per", 1)


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """The real result files, with round figures where the hand computation below uses them."""
    out = tmp_path / "results"
    out.mkdir()
    for name in ("assemble.json", "ingest.json", "units.json"):
        shutil.copy(RESULTS / name, out / name)
    units = json.loads((out / "units.json").read_text())
    units["collect"]["event_type_shares"] = {"identify": 0.2, "page": 0.5, "track": 0.3}
    units["collect"]["tail_write_units_per_tail_event"] = 2.0
    units["collect"]["tail_read_units_per_request"] = 1.5
    units["rebuild"]["write_units_per_changed_profile"] = 4.0
    for kind, (cpu, ddb, rru) in {"fields": (0.0031, 2, 1.0), "full": (0.0062, 4, 2.5),
                                  "text": (0.0065, 4, 2.5), "recent": (0.006, 4, 2.0)}.items():
        units["fetch"][kind].update(cpu_s_per_request=cpu, dynamodb_requests_per_request=ddb,
                                    read_units_per_request=rru)
    (out / "units.json").write_text(json.dumps(units))
    return out


def _estimate(results: Path, **workload: Any) -> cost.Estimate:
    memory = cost.memory_mb(cost.load_template(REPO / "template.yaml"))
    return cost.estimate(cost.Workload(**workload), cost.load_units(results), cost.load_prices(), memory)


def _line(est: cost.Estimate, function: str, item: str) -> float:
    found = [line.usd for line in est.lines if line.function == function and line.item == item]
    assert len(found) == 1, (function, item, [(x.function, x.item) for x in est.lines])
    return found[0]


def test_serving_lines_match_a_hand_computation(results: Path) -> None:
    # Given 20 fetches a second, half of them a few fields and half the whole context, 4 ms per store round trip
    est = _estimate(results, fetches_per_second=20, fetch_mix={"fields": 0.5, "full": 0.5}, store_latency_ms=4)
    fetches = 20 * MONTH_S  # 51,840,000 a month
    # Then the gateway charges each request once
    assert _line(est, "fetch_context", "HTTP API requests") == pytest.approx(fetches * 1.00 / 1e6)
    assert _line(est, "fetch_context", "HTTP API requests") == pytest.approx(fetches * price("http_api_request"))
    # and DynamoDB the read units of each kind: 0.5 × 1.0 + 0.5 × 2.5 = 1.75 a fetch
    assert _line(est, "fetch_context", "context reads") == pytest.approx(fetches * 1.75 * 0.125 / 1e6)
    # and Lambda bills whole milliseconds: fields 3.1 + 2 × 4 → 12 ms, full 6.2 + 4 × 4 → 23 ms, at 1 GB
    assert _line(est, "fetch_context", "duration") == pytest.approx(
        fetches * (0.5 * 12 + 0.5 * 23) / 1000 * 1.0 * 0.0000166667)
    assert _line(est, "fetch_context", "requests") == pytest.approx(fetches * 0.20 / 1e6)


def test_function_url_drops_exactly_the_gateway_line(results: Path) -> None:
    gateway = _estimate(results, fetches_per_second=50)
    url = _estimate(results, fetches_per_second=50, serving="function-url")
    # 50/s × 2,592,000 s = 129.6 M requests at $1 per million
    assert gateway.total - url.total == pytest.approx(129.6)
    assert url.by("service")["API Gateway"] == pytest.approx(_line(url, "collect", "HTTP API requests"))


def test_live_tail_and_landing_match_a_hand_computation(results: Path) -> None:
    # Given 2 M events a day, tail types page and track (0.5 + 0.3 of events), 2 write units per tail event
    est = _estimate(results, events_per_day=2_000_000, events_per_request=20, tail_types=["page", "track"],
                    profiles=100_000, changed_share=0.02, build_every_minutes=60)
    events = 2_000_000 * 30
    assert _line(est, "collect", "live tail writes") == pytest.approx(events * 0.8 * 2.0 * 0.625 / 1e6)
    # one BatchGetItem on the aliases per request: 1.5 read units × 3 M requests
    assert _line(est, "collect", "live tail alias reads") == pytest.approx(events / 20 * 1.5 * 0.125 / 1e6)
    # 24 builds a day × 30 days × 2,000 changed profiles × 4 write units
    assert _line(est, "build_context", "snapshot landing") == pytest.approx(24 * 30 * 2_000 * 4.0 * 0.625 / 1e6)
    assert _line(est, "collect", "HTTP API requests") == pytest.approx(events / 20 * 1.00 / 1e6)
    # Only track events in the tail: 0.3 of events
    only_track = _estimate(results, events_per_day=2_000_000, events_per_request=20, tail_types=["track"])
    assert _line(only_track, "collect", "live tail writes") == pytest.approx(events * 0.3 * 2.0 * 0.625 / 1e6)
    # The tail off: no tail lines at all
    off = _estimate(results, events_per_day=2_000_000, live_tail=False)
    assert not [x for x in off.lines if "live tail" in x.item]


def test_a_full_build_over_the_lambda_limit_is_flagged(results: Path) -> None:
    assemble = json.loads((results / "assemble.json").read_text())["results"]
    largest = max(assemble, key=lambda r: r["events"])
    per_million = largest["build_wall_s"] / largest["events"] * 1e6
    est = _estimate(results, build_reads="all", retention_days=30)
    seconds = 10_000_000 * 30 / 1e6 * per_million
    assert any(f"~{seconds:,.0f} s" in w and "900 s limit" in w for w in est.warnings), est.warnings
    assert _line(est, "build_context", "duration") == pytest.approx(
        96 * 30 * math.ceil(seconds * 1000) / 1000 * 4.0 * 0.0000166667)


@pytest.mark.parametrize("name", ["assemble.json", "ingest.json", "units.json"])
def test_a_missing_result_file_names_the_benchmark_to_run(results: Path, name: str) -> None:
    (results / name).unlink()
    with pytest.raises(ConfigError) as err:
        cost.load_units(results)
    bench = name.removesuffix(".json")
    assert f"run the {bench} benchmark" in err.value.message and f"bench/{bench}.py" in err.value.message


def test_a_missing_figure_names_the_field_and_the_benchmark(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    units = json.loads((results / "units.json").read_text())
    del units["fetch"]["text"]["read_units_per_request"]
    (results / "units.json").write_text(json.dumps(units))
    # the command answers one line, no traceback
    assert cli.main(["cost", "--results", str(results)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: bench/results/units.json: no 'fetch.text.read_units_per_request'; run the units "
                   "benchmark (.venv/bin/python bench/units.py) to measure it")


def test_every_figure_comes_from_a_result_file(results: Path) -> None:
    units = cost.load_units(results)
    assert set(units.values) == set(units.sources)
    for key, source in units.sources.items():
        assert source.split(":")[0] in cost.BENCHMARKS, (key, source)
    # a figure changed in the file changes the bill
    before = _estimate(results).by("service")["DynamoDB"]
    data = json.loads((results / "units.json").read_text())
    data["collect"]["tail_write_units_per_tail_event"] = 4.0
    (results / "units.json").write_text(json.dumps(data))
    assert _estimate(results).by("service")["DynamoDB"] > before


def test_bad_workload_values_are_one_line_errors(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["cost", "--results", str(results), "--fetch-mix", "fields=0.5,bogus=0.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: fetch_mix: unknown kind 'bogus'; kinds: fields, full, text, recent"
    assert cli.main(["cost", "--results", str(results), "--fetch-mix", "fields=0.5"]) == 2
    assert "fetch_mix: shares must add up to 1" in capsys.readouterr().err
    assert cli.main(["cost", "--results", str(results), "--tail-types", "track,trak"]) == 2
    assert capsys.readouterr().err.strip() == ("error: tail_types: 'trak' is not an event type; types: track, "
                                               "identify, page, screen, group, alias")


def test_json_output_totals_its_lines(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["cost", "--results", str(results), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["total_usd"] == pytest.approx(sum(line["usd"] for line in out["lines"]), abs=0.05)
    assert out["total_usd"] == pytest.approx(sum(out["by_function_usd"].values()), abs=0.05)
    assert out["workload"]["fetches_per_second"] == 100 and out["workload"]["profiles"] == 1_000_000
    assert out["prices_as_of"] and out["region"] == "us-east-1"


@pytest.mark.parametrize(("args", "error"), [
    (["--events-per-day", "nan"], "error: events_per_day: must be a finite number, got nan"),
    (["--fetches-per-second", "inf"], "error: fetches_per_second: must be a finite number, got inf"),
    (["--fetch-mix", "fields=2,full=-1"], "error: fetch_mix: the share of fields must be between 0 and 1, got 2.0"),
    (["--fetch-mix", "fields=nan,full=nan,text=nan,recent=nan"],
     "error: fetch_mix: the share of fields must be between 0 and 1, got nan"),
    (["--fetch-mix", ""], "error: fetch_mix: empty, while fetches_per_second is not 0; give kind=share pairs, "
                          "e.g. fields=0.5,full=0.5"),
    (["--template", "{tmp}/not-yaml.yaml"], "error: {tmp}/not-yaml.yaml: not valid YAML (mapping values are not "
                                            "allowed here at line 1, column 5)"),
    (["--template", "{tmp}/other.yaml"], "error: template: no usable Globals.Function (pass --template the project's "
                                         "template.yaml)"),
    (["--prices", "README.md"], "error: README.md: not valid YAML (mapping values are not allowed here at line 6, "
                                "column 100)"),
])
def test_odd_numbers_and_files_are_one_line_errors(results: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   args: list[str], error: str) -> None:
    """Not-a-number, infinite or negative shares and a file that is not the template: one line, exit status 2
    (they were tracebacks, or a bill priced on nan)."""
    (tmp_path / "not-yaml.yaml").write_text("a: b: c\n")
    (tmp_path / "other.yaml").write_text("Globals: 3\n")
    assert cli.main(["cost", "--results", str(results), *(a.format(tmp=tmp_path) for a in args)]) == 2
    assert capsys.readouterr().err.strip() == error.format(tmp=tmp_path)


def test_a_malformed_fetch_mix_is_a_usage_error(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["cost", "--results", str(results), "--fetch-mix", "fields"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "argument --fetch-mix: 'fields' is not kind=share" in err and "Traceback" not in err


def test_malformed_result_and_price_files_are_one_line_errors(results: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    units = json.loads((results / "units.json").read_text())
    units["collect"]["cpu_s_per_million_events"] = "fast"
    (results / "units.json").write_text(json.dumps(units))
    assert cli.main(["cost", "--results", str(results)]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: bench/results/units.json: 'collect.cpu_s_per_million_events' is not a number ('fast'); run the units "
        "benchmark (.venv/bin/python bench/units.py) again")
    shutil.copy(RESULTS / "units.json", results / "units.json")
    (results / "assemble.json").write_text(json.dumps({"results": []}))
    assert cli.main(["cost", "--results", str(results)]) == 2
    assert "'results' is not a list of measured sizes" in capsys.readouterr().err
    shutil.copy(RESULTS / "assemble.json", results / "assemble.json")
    for body, error in [("region: x\nas_of: y\nprices: []\nmetering: {}\n", "prices must be a map of name to entry"),
                        ("region: x\nas_of: y\nprices: {}\nmetering: {}\n", "needs a numeric value")]:
        (tmp_path / "prices.yaml").write_text(body)
        assert cli.main(["cost", "--results", str(results), "--prices", str(tmp_path / "prices.yaml")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and error in err, err
