"""Measured kernel choice (docs/design.md section 8): which formulation of an
op runs (``choice``: ``run_fastest``, ``NAS_KERNELS``), when inductor may
compile one (``compiled``), the numerics plan a study keeps (``plan``), and
the formulations themselves (``conv``, ``pool``, ``broadcast``)."""
