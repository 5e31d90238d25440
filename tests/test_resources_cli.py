"""`geoscreen resources list/show/fetch` through a Typer app that registers the sub-app."""

from __future__ import annotations

import json
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from geoscreen.agent.cli.resources import register
from geoscreen.store.cache import write_cache

runner = CliRunner()


def make_app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def root() -> None:
        """geoscreen (test root)."""

    register(app)
    return app


@pytest.fixture(autouse=True)
def _env(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory,
         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEOSCREEN_INDEX_DIR",
                       str(tmp_path_factory.getbasetemp() / "resource-index"))
    monkeypatch.setenv("GEOSCREEN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five genes; SEPT7 uses the pre-2020 symbol and BLK is an all-zero (absent) row."""
    genes = ["PAX5", "CD19", "SEPT7", "BLK", "BATF"]
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    x[3] = 0
    out = tmp_path_factory.mktemp("cache") / "c"
    write_cache(out, {"layer0": x}, genes, model="test", synthetic=True)
    return out


def test_list_shows_resources_versions_and_grammar() -> None:
    res = runner.invoke(make_app(), ["resources", "list"])
    assert res.exit_code == 0, res.output
    for word in ("go", "string", "trrust", "reactome", "markers", "CC BY-SA 4.0",
                 "not fetched: geoscreen resources fetch hpa", "Reference grammar", "@bundled"):
        assert word in res.output
    res = runner.invoke(make_app(), ["resources", "list", "--json"])
    data = json.loads(res.output)
    by_name = {r["name"]: r for r in data["resources"]}
    assert by_name["go"]["in_use"] == "bundled" and by_name["go"]["versions"][0]["checksum"]
    assert by_name["hpa"]["versions"] == [] and by_name["hpa"]["fetchable"]
    assert any("&" in line for line in data["grammar"])


def test_show_gene_set_with_cache_counts_present_genes(cache: Path) -> None:
    res = runner.invoke(make_app(), ["resources", "show", "genes:PAX5,SEPTIN7,BLK,FOO1",
                                     "--cache", str(cache), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    rec = data["record"]
    assert (rec["requested"], rec["mapped"], rec["unmapped"], rec["present"]) == (4, 3, 1, 2)
    assert data["present_flags"] == [True, True, False, False]  # SEPTIN7 found as SEPT7
    res = runner.invoke(make_app(), ["resources", "show", "trrust:TF=PAX5", "--cache", str(cache),
                                     "--limit", "3"])
    assert res.exit_code == 0, res.output
    assert "directed pair set" in res.output and "present in cache" in res.output
    assert "(source)" in res.output and "sign" in res.output


def test_show_composite_lists_parts() -> None:
    res = runner.invoke(make_app(), ["resources", "show", "string:>=900 - go-cooccurrence",
                                     "--limit", "2"])
    assert res.exit_code == 0, res.output
    assert "go-cooccurrence:BP<=50" in res.output and "parts" in res.output
    assert "string: v12.0" in res.output and "go: 2022-09-12" in res.output


@pytest.mark.parametrize(("ref", "message"), [
    ("strng:>=700", "unknown resource 'strng'; did you mean 'string'"),
    ("string:>=700 - ", "position 16: expected a resource name after '-'"),
    ("markers:B cells", "geoscreen resources fetch markers"),
])
def test_show_errors_are_one_line_with_exit_code_2(ref: str, message: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from geoscreen.agent.cli import main

    assert main(["resources", "show", ref]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("error: ")
    assert err.strip().count("\n") == 0


def test_fetch_command_installs_a_version(tmp_path: Path) -> None:
    (tmp_path / "trrust.tsv").write_text("PAX5\tCD19\tActivation\t1\n")

    class Quiet(SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kw: object) -> None:
            super().__init__(*args, directory=str(tmp_path), **kw)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/trrust.tsv"
        res = runner.invoke(make_app(), ["resources", "fetch", "trrust", "--url", url])
        assert res.exit_code == 0, res.output
        assert "installed version" in res.output and "1 edges" in res.output
        res = runner.invoke(make_app(), ["resources", "show", "trrust", "--json"])
        assert json.loads(res.output)["record"]["version"].startswith("fetched ")
        res = runner.invoke(make_app(), ["resources", "fetch", "trrust", "--url", url,
                                         "--sha256", "ab" * 32])
        assert res.exit_code != 0 and "sha256 mismatch" in str(res.exception)
    finally:
        httpd.shutdown()
        httpd.server_close()
