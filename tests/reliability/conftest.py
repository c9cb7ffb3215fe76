"""The reliability suite (marker ``reliability``): each test reports its rows (fault or input,
outcome, records lost) through the ``report`` fixture of tests/conftest.py, which prints them
as one table at the end of the session, from every worker. Tests elsewhere that prove an item
of the suite (access control, secrets in logs, bandit, scale-out) carry the marker and report
rows too."""
