"""Study storage (docs/design.md section 7): URLs and backends with the gRPC
proxy (``backends``), worker liveness — heartbeats, reaping and retrying
trials of dead workers (``liveness``) — and the artifact folder
(``artifacts``)."""
