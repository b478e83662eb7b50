#!/usr/bin/env bash
# Make sure RabbitMQ (5672) and Redis (6379) answer on this machine: use them if running,
# start them if installed, install them with apt-get (as root) if missing.
set -euo pipefail

open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

need_install=()
command -v rabbitmq-server >/dev/null || open 5672 || need_install+=(rabbitmq-server)
command -v redis-server >/dev/null || open 6379 || need_install+=(redis-server)
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

if ! open 6379; then
  echo "starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
fi
if ! open 5672; then
  echo "starting RabbitMQ"
  # Its CLI can hold a pipe open through an Erlang child: never pipe it, bound it.
  timeout -s KILL 120 rabbitmq-server -detached >/tmp/faceval-rabbitmq-start.log 2>&1 || true
fi
for _ in $(seq 1 120); do
  open 5672 && open 6379 && exit 0
  sleep 1
done
echo "RabbitMQ or Redis did not come up; see /tmp/faceval-rabbitmq-start.log" >&2
exit 1
