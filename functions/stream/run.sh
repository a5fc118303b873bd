#!/bin/bash
# Lambda Web Adapter entry: the adapter (AWS_LAMBDA_EXEC_WRAPPER=/opt/bootstrap) starts this script,
# waits for /healthz, then streams each invocation through uvicorn on AWS_LWA_PORT.
export PYTHONPATH="${LAMBDA_TASK_ROOT:-.}:/opt/python${PYTHONPATH:+:$PYTHONPATH}"
exec python -m uvicorn main:app \
  --host 127.0.0.1 --port "${AWS_LWA_PORT:-8080}" \
  --no-access-log --log-level warning --timeout-keep-alive 900
