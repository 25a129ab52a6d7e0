"""Tests against a real deployment: dagster-daemon and dagster-webserver on deploy/dagster.yaml."""
