"""vmxsim's server: the gRPC service around the emulator core in ``vmxsim_server.vmx``."""

import os

# The engine's numpy matrices are tiny: OpenBLAS's own threads (one per core, spinning while
# they wait) only took CPU from the server and the trace reader on 2 cores. setdefault: a
# user's own setting wins. Before any module of this package imports numpy.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"
