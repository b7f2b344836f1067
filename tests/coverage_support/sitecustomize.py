"""`make coverage` puts this directory on PYTHONPATH: every Python process the tests start
(`unirealm run` subprocesses included) measures coverage when COVERAGE_PROCESS_START names
the configuration."""

import coverage

coverage.process_startup()
