"""Generated protobuf and gRPC stubs of package vmxsim.v1 (scripts/gen_protos)."""
