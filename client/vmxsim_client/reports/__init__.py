"""What vmxsim tells people about runs: the side-by-side comparison of profiles and modes
(``comparison``), reports as charts and one HTML page (``runs`` collects, ``write`` renders with
``charts`` and ``html_page``), the per-exit comparison with a recorded trace (``per_exit``,
``per_exit_file``), and the exit sources and progress bar those runs share.

Layer: reports import the client proper and ``traces``, never the CLI or ``load``.

    report = collect(client, "mix:linux-boot:50000", ["haxm-legacy", "kvm"], ["native", "nested"])
    write_report(report, out_dir="report", html="report.html")
"""

from .comparison import compare, ratios
from .runs import Report, RunResult, collect
from .write import write_report

__all__ = ["Report", "RunResult", "collect", "compare", "ratios", "write_report"]
