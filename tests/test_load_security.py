"""``vmxsim load`` and deploy/load/locustfile.py speak TLS and bearer tokens with the options of
every other command, against a real server that requires both; ``vmxsim load --metrics-listen``
exports the clients' own metrics while the run lasts."""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from vmxsim_client.cli import main
from vmxsim_client.load.local_servers import free_port
from vmxsim_server.app import BackgroundServer, start_background
from vmxsim_server.config import ServerConfig

LOCUSTFILE = Path(__file__).resolve().parent.parent / "deploy/load/locustfile.py"
TOKEN = "load-test-token-1"


@pytest.fixture(scope="module")
def secured(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[BackgroundServer, dict[str, Path]]]:
    """A server with TLS (a throwaway CA) that takes only calls with ``TOKEN``."""
    where = tmp_path_factory.mktemp("secured")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    files = {
        name: where / name for name in ("ca.pem", "server.pem", "server.key", "tokens", "token")
    }
    ca.cert_pem.write_to_path(str(files["ca.pem"]))
    cert.private_key_pem.write_to_path(str(files["server.key"]))
    files["server.pem"].write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    files["tokens"].write_text(f"{TOKEN}\n")
    files["token"].write_text(f"{TOKEN}\n")
    config = ServerConfig(
        listen="127.0.0.1:0", metrics_listen=None, grace_seconds=0.5,
        tls_cert=str(files["server.pem"]), tls_key=str(files["server.key"]),
        auth_token_file=str(files["tokens"]),
    )  # fmt: skip
    with start_background(config) as server:
        yield server, files


def test_load_with_tls_and_a_token(
    secured: tuple[BackgroundServer, dict[str, Path]], capsys: pytest.CaptureFixture[str]
) -> None:
    server, files = secured
    run = ["load", "--server", server.address, "--clients", "2", "--exits", "8000",
           "--mix", "linux-boot", "--batch-size", "1000", "--tls-ca", str(files["ca.pem"]),
           "--json"]  # fmt: skip
    assert main([*run, "--token-file", str(files["token"])]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["errors"] == {} and report["consistent"] and report["exits"] == 8000
    # without the token the server refuses the first call: a one-line error
    assert main(run) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "UNAUTHENTICATED" in err


def test_load_exports_its_own_metrics(vmxsim_address: str) -> None:
    address = f"127.0.0.1:{free_port()}"
    pages: list[str] = []
    stop = threading.Event()

    def scrape() -> None:
        while not stop.is_set():
            try:
                with urllib.request.urlopen(f"http://{address}/metrics", timeout=1) as answer:
                    pages.append(answer.read().decode())
            except OSError:
                pass
            time.sleep(0.2)

    scraper = threading.Thread(target=scrape)
    scraper.start()
    try:
        status = main(["load", "--server", vmxsim_address, "--duration", "2", "--mix",
                       "linux-boot", "--metrics-listen", address, "--json"])  # fmt: skip
    finally:
        stop.set()
        scraper.join()
    assert status == 0
    assert pages, "no scrape answered while the run lasted"
    last = pages[-1]
    assert 'vmxsim_load_exits_total{mode="native",profile="kvm"}' in last
    count = next(line for line in last.splitlines()
                 if line.startswith("vmxsim_load_batch_round_trip_seconds_count"))  # fmt: skip
    assert float(count.rsplit(" ", 1)[1]) > 0
    several = ["load", "--server", vmxsim_address, "--exits", "10", "--mix", "linux-boot",
               "--metrics-listen", address, "--processes", "2", "--clients", "2"]  # fmt: skip
    assert main(several) == 2  # one process only


@pytest.mark.skipif(importlib.util.find_spec("locust") is None, reason="locust is not installed")
def test_locustfile_with_tls_and_a_token(
    secured: tuple[BackgroundServer, dict[str, Path]], tmp_path: Path
) -> None:
    server, files = secured
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-u", "2",
               "-r", "2", "-t", "6s", "--host", server.address, "--csv", str(tmp_path / "out"),
               "--only-summary", "--loglevel", "WARNING", "--vmxsim-tls-ca", str(files["ca.pem"]),
               "--vmxsim-token-file", str(files["token"])]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    with open(tmp_path / "out_stats.csv", newline="") as f:
        rows = {row["Name"]: row for row in csv.DictReader(f)}
    assert "Drive" in rows, (rows, done.stderr[-2000:])
    assert int(rows["Drive"]["Request Count"]) > 0
    assert int(rows["Aggregated"]["Failure Count"]) == 0
