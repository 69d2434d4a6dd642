"""vmxsim's client side: the typed gRPC client, the ``vmxsim`` CLI, trace readers and reports."""
