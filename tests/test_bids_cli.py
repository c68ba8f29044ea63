"""``vpp bids check`` through Typer's CliRunner on AEMO's files: all of data/nemweb passes; a damaged bid fails
with its rule and AEMO's field; a unit without registration is not checked; an uncovered year is an error."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from tests.aemo_fixtures import NEMWEB_ROOT, archive_zip, member, zipped

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str | None]:
    return {"VPP_STATE_DIR": str(tmp_path / "state"), "VPP_CONFIG": None, "COLUMNS": "200"}


def _total(output: str) -> re.Match[str]:
    match = re.search(r"checked (\d+) bids \(offers\) of (\d+) units on (\d+) trading days: (\d+) passed, "
                      r"(\d+) failed, (\d+) not checked \(no registration\); (\d+) unit-days", output)
    assert match is not None, output
    return match


def test_every_real_bid_passes(env: dict[str, str | None]) -> None:
    result = runner.invoke(app, ["bids", "check", str(NEMWEB_ROOT)], env=env)
    assert result.exit_code == 0, result.output
    total = _total(result.output)
    assert total[1] == total[4] and int(total[1]) > 600 and total[5] == total[6] == "0"
    assert (total[2], total[3]) == ("2", "40")
    assert re.search(r"^AGLHAL\s+2018-04-01\s+passed\s+2 offers$", result.output, re.M)
    assert re.search(r"^HDWF2\s+2024-08-01\s+passed\s+21 offers$", result.output, re.M)
    assert "no band prices" in result.output  # the pruned data's extra day of period rows


def _month(tmp_path: Path, month: str, *, edit: tuple[bytes, bytes] | None = None,
           with_registrations: bool = True) -> Path:
    """A folder with a month's bid files (BIDDAYOFFER_D edited by ``edit``) and DUDETAILSUMMARY."""
    folder = tmp_path / month
    folder.mkdir()
    day_offers = archive_zip(month, "BIDDAYOFFER_D")
    if edit is None:
        shutil.copy(day_offers, folder / day_offers.name)
    else:
        name, data = member(day_offers)
        assert edit[0] in data
        (folder / day_offers.name).write_bytes(zipped(name, data.replace(edit[0], edit[1])))
    shutil.copy(archive_zip(month, "BIDPEROFFER_D"), folder)
    if with_registrations:
        shutil.copy(archive_zip("2021_05", "DUDETAILSUMMARY"), folder)
    return folder


def test_a_bid_above_the_cap_fails_with_rule_and_field(tmp_path: Path, env: dict[str, str | None]) -> None:
    # AGLHAL's top ENERGY band in August 2024 (FY2024-25 cap 17,500 x its loss factor) moved above the cap.
    folder = _month(tmp_path, "2024_08", edit=(b",16738.75,", b",17499.99,"))
    result = runner.invoke(app, ["bids", "check", str(folder)], env=env)
    assert result.exit_code == 1, result.output
    failed = [line for line in result.output.splitlines() if "FAILED" in line]
    assert failed and all(line.startswith("AGLHAL") for line in failed)
    assert all(" V2 PRICEBAND1..10: 'ENERGY' GEN band prices [17499.99] lie outside" in line for line in failed)
    assert re.search(r"^HDWF2\s+2024-08-01\s+passed", result.output, re.M)
    total = _total(result.output)
    assert int(total[5]) > 0 and total[6] == "0"


def test_a_unit_without_registration_is_not_checked(tmp_path: Path, env: dict[str, str | None]) -> None:
    folder = _month(tmp_path, "2024_08", with_registrations=False)
    result = runner.invoke(app, ["bids", "check", str(folder)], env=env)
    assert result.exit_code == 1, result.output
    assert "NOT CHECKED" in result.output and "no registration (DUDETAILSUMMARY) of AGLHAL" in result.output
    total = _total(result.output)
    assert total[4] == total[5] == "0" and total[6] == total[1]


def test_a_year_no_source_covers_is_one_error_line(tmp_path: Path, env: dict[str, str | None]) -> None:
    folder = _month(tmp_path, "2018_04")  # FY2017-18: not configured, and no MARKET_PRICE_THRESHOLDS given
    result = runner.invoke(app, ["bids", "check", str(folder)], env=env)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert lines[0].startswith("error: no market price cap for trading day 2018-04-01 (FY2017-18)")
    shutil.copy(archive_zip("2021_05", "MARKET_PRICE_THRESHOLDS"), folder)
    covered = runner.invoke(app, ["bids", "check", str(folder)], env=env)
    assert covered.exit_code == 0, covered.output


@pytest.mark.parametrize("arguments, fragment", [
    (["/no/such/place"], "/no/such/place: no such file or folder"),
    ([str(NEMWEB_ROOT / "README.md")], "README.md"),
])
def test_bad_paths_are_one_error_line(arguments: list[str], fragment: str, env: dict[str, str | None]) -> None:
    result = runner.invoke(app, ["bids", "check", *arguments], env=env)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], result.output


def test_registrations_and_price_limits_from_the_market_store(tmp_path: Path, env: dict[str, str | None]) -> None:
    """Bid files alone, with DUDETAILSUMMARY and MARKET_PRICE_THRESHOLDS synced into the local store."""
    folder = _month(tmp_path, "2018_04", with_registrations=False)
    alone = runner.invoke(app, ["bids", "check", str(folder)], env=env)
    assert alone.exit_code == 1 and "FY2017-18" in alone.output
    sync = runner.invoke(app, ["data", "sync", "--source", str(NEMWEB_ROOT), "--tables",
                               "DUDETAILSUMMARY,MARKET_PRICE_THRESHOLDS", "--no-current"], env=env)
    assert sync.exit_code == 0, sync.output
    with_store = runner.invoke(app, ["bids", "check", str(folder)], env=env)
    assert with_store.exit_code == 0, with_store.output
    total = _total(with_store.output)
    assert total[1] == total[4] and total[5] == total[6] == "0"
