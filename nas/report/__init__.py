"""What a finished (or running) study says: the report files and the Pareto
plot (``report``), picking and exporting a trial (``export``), the
optuna-dashboard note (``note``) and comparing studies (``compare``)."""
