"""Analysis of a study's results: aggregation (results.py), statistics (stats.py), the four claims
(claims.py), consistency with pre-training (consistency.py), figures (figures.py), advice
(advise.py) and the report (report.py)."""
