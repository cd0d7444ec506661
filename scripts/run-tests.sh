#!/usr/bin/env bash
# Run the whole test suite. The suite starts its own Kafka broker, S3 server and
# Prometheus (see tests/conftest.py); IDQ_TEST_BOOTSTRAP names a running broker instead.
set -uo pipefail
cd "$(dirname "$0")/.."
.venv/bin/pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: treating as failure of the harness" >&2
  exit 1
fi
exit "$rc"
