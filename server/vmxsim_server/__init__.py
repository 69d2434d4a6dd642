"""vmxsim's server: the gRPC service around the emulator core in ``vmxsim_server.vmx``."""

__version__ = "0.1.0"
