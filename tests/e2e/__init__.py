"""End-to-end tests: real server processes driven by the CLI, grpcurl and the SDK."""
