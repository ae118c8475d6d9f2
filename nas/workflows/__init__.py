"""Workflows built on many trainings: calibrating a fidelity (``calibrate``,
with ``zero_cost`` proxies), promoting front candidates to a full budget
(``promote``), ablating a design's attention (``ablate``) and retraining an
exported config (``retrain``) (docs/design.md section 6a)."""
