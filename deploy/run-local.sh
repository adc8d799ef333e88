#!/usr/bin/env bash
# `make run`: start the local Kafka broker, the router with config/routes.yaml in the
# background, and the gateway in the foreground. `make stop` (this script with `stop`)
# stops all three.
#
# Honours GATEWAY_KAFKA_BOOTSTRAP, GATEWAY_HTTP_HOST, GATEWAY_HTTP_PORT and
# HITL_WEBHOOK_SECRETS. Without a secret it generates a development secret once and
# keeps it in .run/dev-webhook-secret.
set -euo pipefail

repo_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
run_dir=$repo_dir/.run
bin=$repo_dir/.venv/bin
router_pid_file=$run_dir/router.pid
gateway_pid_file=$run_dir/gateway.pid
mkdir -p "$run_dir"

stop_pid_file() {
    local pid_file=$1 name=$2 pid
    [[ -f $pid_file ]] || return 0
    pid=$(cat "$pid_file")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$pid" 2>/dev/null || true
        echo "run-local: stopped the $name (pid $pid)"
    fi
    rm -f "$pid_file"
}

if [[ ${1:-} == stop ]]; then
    stop_pid_file "$gateway_pid_file" gateway
    stop_pid_file "$router_pid_file" router
    bash "$repo_dir/deploy/kafka.sh" stop
    exit 0
fi

host=${GATEWAY_HTTP_HOST:-127.0.0.1}
port=${GATEWAY_HTTP_PORT:-8080}
if [[ -z ${GATEWAY_KAFKA_BOOTSTRAP:-} ]]; then
    GATEWAY_KAFKA_BOOTSTRAP=$(bash "$repo_dir/deploy/kafka.sh" start | tail -n 1)
fi
export GATEWAY_KAFKA_BOOTSTRAP

if [[ -z ${HITL_WEBHOOK_SECRETS:-} ]]; then
    secret_file=$run_dir/dev-webhook-secret
    if [[ ! -s $secret_file ]]; then
        (umask 077; "$bin/python" -c 'import secrets; print("dev_" + secrets.token_hex(24))' > "$secret_file")
    fi
    HITL_WEBHOOK_SECRETS=$(cat "$secret_file")
    echo "run-local: no HITL_WEBHOOK_SECRETS set; using the development secret in $secret_file"
fi
export HITL_WEBHOOK_SECRETS
first_secret=${HITL_WEBHOOK_SECRETS%%,*}

url_host=$host
[[ $host == *:* ]] && url_host="[$host]"
url="http://$url_host:$port/webhooks/hitl"

stop_pid_file "$router_pid_file" router
"$bin/hitl-gateway" route --config "$repo_dir/config/routes.yaml" > "$run_dir/router.log" 2>&1 &
echo $! > "$router_pid_file"

cat <<MESSAGE
run-local: Kafka at $GATEWAY_KAFKA_BOOTSTRAP
run-local: router running with config/routes.yaml (log: .run/router.log)
run-local: gateway listening on $url
run-local: try it from another terminal:
    $bin/hitl-gateway send-test --url $url --secret '$first_secret'
run-local: Ctrl-C stops the gateway and the router; make stop also stops the broker
MESSAGE

cleanup() {
    stop_pid_file "$router_pid_file" router
    rm -f "$gateway_pid_file"
}
trap cleanup EXIT
"$bin/hitl-gateway" serve --config "$repo_dir/config/gateway.yaml" &
gateway_pid=$!
echo "$gateway_pid" > "$gateway_pid_file"
trap 'kill -TERM $gateway_pid 2>/dev/null || true' INT TERM
wait "$gateway_pid" || true
wait "$gateway_pid" 2>/dev/null || true
