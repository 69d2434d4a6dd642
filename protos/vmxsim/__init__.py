"""vmxsim's wire contract: ``vmxsim.v1`` holds the .proto files and their generated stubs."""
