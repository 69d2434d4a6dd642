"""Load against one or more servers: ``runner`` plans and runs it (``vmxsim load``), ``driver``
streams batches from worker processes, ``sharding`` spreads vCPUs over targets, and
``local_servers`` starts throwaway server processes on loopback ports.

Layer: load imports the client proper and ``traces``, never the CLI or ``reports``.
"""

from .local_servers import LocalServer, local_servers
from .runner import LoadPlan, run_load
from .sharding import ShardedClient

__all__ = ["LoadPlan", "LocalServer", "ShardedClient", "local_servers", "run_load"]
