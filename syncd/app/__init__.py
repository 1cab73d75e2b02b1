"""What people run: the CLI, the HTTP server and webhooks, the demo, and the wiring."""
