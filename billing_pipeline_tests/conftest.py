"""The test package's fixtures live in billing_pipeline_tests/support/fixtures.py."""

pytest_plugins = ["billing_pipeline_tests.support.fixtures"]
