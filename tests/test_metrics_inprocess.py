"""The CLI's in-process server (commands without ``--server``) can expose its metrics too:
``--metrics-listen`` on every command that starts one."""

from __future__ import annotations

import urllib.request

import pytest

from vmxsim_client.cli import main
from vmxsim_client.inprocess import connect
from vmxsim_client.load.local_servers import free_port
from vmxsim_server.vmx.mixes import load_mix, synthesize


def test_an_in_process_server_serves_its_metrics() -> None:
    address = f"127.0.0.1:{free_port()}"
    with connect(None, metrics_listen=address) as client:
        client.replay(synthesize(load_mix("linux-boot"), 2000, seed=1), "kvm", "nested")
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as answer:
            page = answer.read().decode()
    assert 'vmxsim_vm_exits_total{exit_reason="' in page
    assert "process_cpu_seconds_total" in page
    total = sum(
        float(line.rsplit(" ", 1)[1])
        for line in page.splitlines()
        if line.startswith("vmxsim_vm_exits_total{")
    )
    assert total == 2000


def test_metrics_listen_is_for_the_in_process_server_only(
    vmxsim_address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["replay", "mix:linux-boot:100", "--server", vmxsim_address,
                   "--metrics-listen", f"127.0.0.1:{free_port()}"])  # fmt: skip
    assert status == 2
    assert "--metrics-listen is for the in-process server" in capsys.readouterr().err
    assert main(["replay", "mix:linux-boot:100", "--metrics-listen", f"127.0.0.1:{free_port()}",
                 "--json"]) == 0  # fmt: skip
