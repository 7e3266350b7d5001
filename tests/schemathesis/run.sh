#!/usr/bin/env bash
# Fuzzes a running engine from its own OpenAPI document with schemathesis (PyPI), after
# openapi-spec-validator (PyPI) has accepted the document.
#
#   ENGINE_URL=http://127.0.0.1:8080 ADMIN_TOKEN=... TENANT_TOKEN=... TENANT_ID=... \
#       bash tests/schemathesis/run.sh
#
# Every operation is run with the admin token, and the operations a tenant key may use (tags
# ingest, analytics and webhooks, and the audit log) with the tenant key. Tenant ids in paths, queries and
# bodies are the given tenant's most of the time, so the fuzzer reaches past the 404s and 403s.
# Checks: no server error (a 503 only with Retry-After); status codes, content types, headers
# and bodies that the document declares; data the document refuses is refused, and data it
# allows is accepted (exceptions below, each with its reason). Exits non-zero on any failure.
#
# The tools live in their own virtual environment, created on first use and reused after:
# $SCHEMATHESIS_VENV, by default target/schemathesis-venv. SCHEMATHESIS_MAX_EXAMPLES (default
# 50) bounds the cases generated per operation and phase. With SCHEMATHESIS_REPORT_DIR set, each
# run leaves its JUnit and NDJSON reports (every request and answer) there.
set -euo pipefail

: "${ENGINE_URL:?the base URL of the engine, e.g. http://127.0.0.1:8080}"
: "${ADMIN_TOKEN:?an admin token}"
: "${TENANT_TOKEN:?a tenant key}"
: "${TENANT_ID:?the tenant of TENANT_TOKEN}"

here=$(cd "$(dirname "$0")" && pwd)
repository=$(cd "$here/../.." && pwd)
venv=${SCHEMATHESIS_VENV:-$repository/target/schemathesis-venv}
max_examples=${SCHEMATHESIS_MAX_EXAMPLES:-50}
requirements="schemathesis==4.32.5 openapi-spec-validator==0.9.0"

if [ "$(cat "$venv/requirements" 2>/dev/null)" != "$requirements" ]; then
    echo "creating $venv with $requirements"
    rm -rf "$venv"
    if ! python3 -m venv "$venv"; then
        echo "python3 cannot create a virtual environment: on Debian or Ubuntu," \
            "apt-get install python3-venv" >&2
        exit 2
    fi
    # shellcheck disable=SC2086
    "$venv/bin/pip" install --quiet --disable-pip-version-check $requirements
    echo "$requirements" >"$venv/requirements"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$venv/bin/python" - "$ENGINE_URL/openapi.json" "$work/openapi.json" <<'PYTHON'
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=30) as response:
    open(sys.argv[2], "wb").write(response.read())
PYTHON
echo "+ openapi-spec-validator $ENGINE_URL/openapi.json"
"$venv/bin/openapi-spec-validator" "$work/openapi.json"

cat >"$work/schemathesis.toml" <<TOML
hooks = "$here/hooks.py"

[generation]
database = ":memory:"

# Only the checks below run.
[checks]
enabled = false

[checks.not_a_server_error]
enabled = true
expected-statuses = ["2XX", "3XX", "4XX", "503"]

[checks.retry_after_with_503]
enabled = true

[checks.status_code_conformance]
enabled = true

[checks.content_type_conformance]
enabled = true

[checks.response_headers_conformance]
enabled = true

[checks.response_schema_conformance]
enabled = true

[checks.positive_data_acceptance]
enabled = true

# Data the document refuses must be refused; too many records is a 413.
[checks.negative_data_rejection]
enabled = true
expected-statuses = ["400", "401", "403", "404", "405", "409", "413", "415", "422", "429", "503"]

# A submission with invalid records is accepted by design: the valid ones are written and the
# invalid ones reported (SPEC section 2), so a record the document refuses does not refuse the
# submission.
[[operations]]
include-path = "/data-scans"
include-method = "POST"
checks.negative_data_rejection.enabled = false

[[operations]]
include-path = "/batch/processing-activities"
include-method = "POST"
checks.negative_data_rejection.enabled = false

# skip and cursor exclude each other (400 conflicting_parameters), which OpenAPI cannot say of
# two parameters.
[[operations]]
include-path = "/analytics/processing-activities"
include-method = "GET"
checks.positive_data_acceptance.enabled = false

# Whether a webhook URL is accepted depends on where its host name resolves, at the moment of
# registration (a name that does not resolve, or resolves to a private address, is refused
# with 422): nothing a schema can say.
[[operations]]
include-path = "/admin/tenants/{tenant_id}/webhooks"
include-method = "POST"
checks.positive_data_acceptance.enabled = false

[dictionaries.tenants]
values = ["$TENANT_ID"]

[parameters]
"query.tenant_id" = { dictionary = "tenants", probability = 0.8 }
"path.tenant_id" = { dictionary = "tenants", probability = 0.8 }
"body.tenant_id" = { dictionary = "tenants", probability = 0.8 }
TOML

fuzz() {
    local who=$1 token=$2
    shift 2
    local reports=()
    if [ -n "${SCHEMATHESIS_REPORT_DIR:-}" ]; then
        reports=(--report junit,ndjson --report-dir "$SCHEMATHESIS_REPORT_DIR/$who")
    fi
    echo "+ schemathesis run as $who (at most $max_examples examples per operation and phase)"
    (cd "$work" && "$venv/bin/schemathesis" --config-file "$work/schemathesis.toml" run \
        "$work/openapi.json" --url "$ENGINE_URL" \
        --header "Authorization: Bearer $token" \
        --phases examples,coverage,fuzzing \
        --max-examples "$max_examples" \
        --workers 1 \
        --request-timeout 60 \
        --no-color \
        "${reports[@]}" "$@")
}

status=0
fuzz admin "$ADMIN_TOKEN" || status=1
fuzz tenant "$TENANT_TOKEN" --include-tag ingest --include-tag analytics \
    --include-tag webhooks --include-path /admin/audit || status=1
exit $status
