"""The architecture: the config (the one contract between a search space, the
model builder and an exported file), paper presets, the blocks and ResNets,
cost counting (MACs, parameters, latency) and checkpoints
(docs/design.md sections 3-5)."""
