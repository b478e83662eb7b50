#!/usr/bin/env bash
# Make sure RabbitMQ and Redis answer where FaceVal will look for them: FACEVAL_BROKER_URL and
# FACEVAL_REDIS_URL (defaults 127.0.0.1:5672 and 127.0.0.1:6379, as in shared/settings.py).
# A server on this machine is used if running, started if installed (on the URL's port),
# installed with apt-get (as root) if missing. A server elsewhere is only waited for:
# nothing is installed or started for it.
set -euo pipefail

broker_url=${FACEVAL_BROKER_URL:-amqp://guest:guest@127.0.0.1:5672//}
redis_url=${FACEVAL_REDIS_URL:-redis://127.0.0.1:6379/0}
wait_seconds=${FACEVAL_SERVICES_WAIT_SECONDS:-120}

# host port password, from a URL (the scheme's default port when it names none).
parse() {
  python3 - "$1" "$2" <<'PY'
import sys
from urllib.parse import unquote, urlsplit

url = urlsplit(sys.argv[1].split(";")[0])
print(url.hostname or "127.0.0.1", url.port or int(sys.argv[2]), unquote(url.password or "") or "-")
PY
}
read -r broker_host broker_port _ <<<"$(parse "$broker_url" "$([[ $broker_url == amqps:* ]] && echo 5671 || echo 5672)")"
read -r redis_host redis_port redis_password <<<"$(parse "$redis_url" 6379)"

local_host() { [[ $1 == 127.* || $1 == localhost || $1 == ::1 || $1 == "[::1]" ]]; }
# Bounded: a connect to a silent remote host would otherwise hang.
open() { timeout 3 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

wait_for() {  # wait_for NAME HOST PORT SECONDS
  for _ in $(seq 1 "$4"); do
    open "$2" "$3" && return 0
    sleep 1
  done
  echo "$1 does not answer on $2:$3 (from its URL); check the URL or start it" >&2
  return 1
}

need_install=()
if local_host "$broker_host"; then
  command -v rabbitmq-server >/dev/null || open "$broker_host" "$broker_port" \
    || need_install+=(rabbitmq-server)
fi
if local_host "$redis_host"; then
  command -v redis-server >/dev/null || open "$redis_host" "$redis_port" \
    || need_install+=(redis-server)
fi
if [ ${#need_install[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "FaceVal needs ${need_install[*]}: run 'sudo apt-get install -y ${need_install[*]}'" \
      "or point FACEVAL_BROKER_URL / FACEVAL_REDIS_URL at running servers." >&2
    exit 1
  fi
  echo "installing ${need_install[*]} with apt-get"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_install[@]}" >/dev/null
fi

if local_host "$redis_host" && ! open "$redis_host" "$redis_port"; then
  echo "starting Redis on port $redis_port"
  auth=()
  [ "$redis_password" = "-" ] || auth=(--requirepass "$redis_password")
  redis-server --daemonize yes --bind 127.0.0.1 --port "$redis_port" --save "" \
    --appendonly no "${auth[@]}" >/dev/null
fi
if local_host "$broker_host" && ! open "$broker_host" "$broker_port"; then
  echo "starting RabbitMQ on port $broker_port"
  # Its CLI can hold a pipe open through an Erlang child: never pipe it, bound it.
  RABBITMQ_NODE_PORT=$broker_port timeout -s KILL 120 rabbitmq-server -detached \
    >/tmp/faceval-rabbitmq-start.log 2>&1 || true
fi
wait_for Redis "$redis_host" "$redis_port" "$wait_seconds" \
  && wait_for RabbitMQ "$broker_host" "$broker_port" "$wait_seconds" && exit 0
local_host "$broker_host" && echo "RabbitMQ start log: /tmp/faceval-rabbitmq-start.log" >&2
exit 1
