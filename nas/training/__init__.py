"""Training a config on a budget: locating and decoding the images
(``datasets``, ``decode``), the splits (``splits``), the budget every
workflow trains on (``budget.Fidelity``), the trainer (``train``), stored
evaluations (``evaluate``) and the one decision function (``noise``)
(docs/design.md section 6)."""
