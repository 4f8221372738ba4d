"""HTTP routes of the agent API, one module per resource; ``deps`` holds auth and the service."""
