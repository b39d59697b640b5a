"""End-to-end tests against real backend servers started by the tests (run with ``pytest -m e2e``)."""
