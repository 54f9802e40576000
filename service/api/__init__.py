"""The HTTP layer: routes, request parsing, error shape and response encoding."""
