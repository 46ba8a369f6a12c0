"""The runtime every service shares: settings, the error hierarchy and its gRPC statuses
(`guard`), the service protocol, shared checks and conversions, reflection, and the
embedded Redis for development."""
