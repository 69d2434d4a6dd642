"""``vmxsim load``, ``ShardedClient`` and the Locust file, against real servers on loopback."""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from vmxsim_client.cli import main
from vmxsim_client.load.local_servers import LocalServer, local_servers
from vmxsim_client.load.runner import LoadPlan, run_load, split_quota
from vmxsim_client.load.sharding import ShardedClient, split_qualified

LOCUSTFILE = Path(__file__).resolve().parent.parent / "deploy/load/locustfile.py"


@pytest.fixture(scope="module")
def two_servers() -> Iterator[list[LocalServer]]:
    """Two ``vmxsim serve`` processes on free loopback ports."""
    with local_servers(2) as servers:
        yield servers


def test_load_json_client_totals_equal_server_totals(
    vmxsim_address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["load", "--server", vmxsim_address, "--clients", "2", "--vcpus-per-client",
                   "2", "--exits", "20000", "--mix", "linux-boot", "--batch-size", "1000",
                   "--json"])  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert status == 0
    assert report["errors"] == {}
    assert report["exits"] == 20_000 == report["server"]["exits"]
    assert report["client"] == report["server"] and report["consistent"]
    assert report["batches"] == 20  # 5,000 exits per vCPU in batches of 1,000
    assert 0 < report["batch_latency_us"]["p50"] <= report["batch_latency_us"]["max"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--server", "10.1.2.3:50051"], "not a loopback address"),
        (["--clients", "100000"], "clients: 100000 is outside"),
        (["--vcpus-per-client", "64", "--clients", "64"], "vCPUs in all"),
    ],
)
def test_load_refuses_remote_targets_and_unbounded_runs(
    options: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["load", "--exits", "10", "--mix", "linux-boot", *options])
    assert status == 2
    assert message in capsys.readouterr().err


def test_split_quota_spreads_the_remainder() -> None:
    assert split_quota(10, 4) == [3, 3, 2, 2]
    assert split_quota(None, 2) == [None, None]


def test_sharded_client_places_vcpus_round_robin(two_servers: list[LocalServer]) -> None:
    targets = [s.address for s in two_servers]
    with ShardedClient(targets) as sharded:
        vcpus = [sharded.create_vcpu("kvm", "native") for _ in range(4)]
        ids = [sharded.qualified_id(v) for v in vcpus]
        assert [split_qualified(i, 2)[0] for i in ids] == [0, 1, 0, 1]
        for shard, client in enumerate(sharded.shards):  # each server holds only its own
            held = {info.vcpu_id for info in client.list_vcpus()}
            assert held == {split_qualified(i, 2)[1] for i in ids if i.startswith(f"{shard}/")}
        vcpus[1].drive([], batch_size=10)  # a handle talks to its own shard
        assert sharded.stats(ids[1])["exits"] == 0
        assert sorted(sharded.list_vcpus()) == sorted(ids)
        for qualified in ids:
            sharded.delete_vcpu(qualified)
        assert sharded.list_vcpus() == []
        with pytest.raises(ValueError, match="names shard 2"):
            sharded.stats("2/vcpu-1")


def test_load_shards_over_two_servers_in_two_processes(two_servers: list[LocalServer]) -> None:
    targets = tuple(s.address for s in two_servers)
    plan = LoadPlan(targets, 2, 2, "mix:linux-boot:10000:0", exits=20_000, batch_size=2048,
                    processes=2)  # fmt: skip
    report = run_load(plan)
    assert report["errors"] == {}
    assert report["client"] == report["server"]
    assert report["exits"] == 20_000
    with ShardedClient(list(targets)) as sharded:  # the run cleaned up after itself
        assert sharded.list_vcpus() == []


@pytest.mark.skipif(
    importlib.util.find_spec("locust") is None,
    reason="locust is not installed (pip install 'vmxsim[load]')",
)
def test_locustfile_runs_headless_without_failures(
    two_servers: list[LocalServer], tmp_path: Path
) -> None:
    # a subprocess: locust monkey-patches the process with gevent
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-u", "4",
               "-r", "4", "-t", "6s", "--host", ",".join(s.address for s in two_servers), "--csv",
               str(tmp_path / "out"), "--only-summary", "--loglevel", "WARNING"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    with open(tmp_path / "out_stats.csv", newline="") as f:
        rows = {row["Name"]: row for row in csv.DictReader(f)}
    for name in ("Drive", "Execute", "Aggregated"):
        assert int(rows[name]["Request Count"]) > 0, name
        assert int(rows[name]["Failure Count"]) == 0, name
