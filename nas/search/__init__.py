"""The search: a space (``space``), one trial's training and scoring
(``objective``), the run loop with its signals (``run``), the study's result
lookups — front, baseline, seed noise — that report and dashboard read
(``results``), Pareto-aware halving (``halving``), progress bars
(``progress``) and several workers on one machine (``workers``)."""
