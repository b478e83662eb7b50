#!/usr/bin/env bash
# Make the secret files docker-compose.yml mounts (./secrets, git-ignored), once. Existing
# files are kept: the pseudonym secrets must never change for an environment, and the
# passwords are already inside the data volumes. Delete a file to rotate it (and its URL).
#   bash scripts/compose-secrets.sh [DIR]
# FaceVal reads its files through FACEVAL_SECRETS_DIR (/run/secrets: one file per setting,
# named like the setting); the backends read theirs with their images' own *_FILE or conf.d
# support. Nothing secret goes into environment variables or `docker inspect`.
set -euo pipefail

dir=${1:-"$(dirname "$0")/../secrets"}
umask 077
mkdir -p "$dir"
chmod 700 "$dir"

random() { od -An -N24 -tx1 /dev/urandom | tr -d ' \n'; }
# read_or_make NAME: the file's value, generated (URL-safe hex) when it does not exist.
read_or_make() {
  [ -s "$dir/$1" ] || random >"$dir/$1"
  cat "$dir/$1"
}
write_once() {  # write_once NAME CONTENT
  [ -s "$dir/$1" ] || printf '%s' "$2" >"$dir/$1"
}

rabbitmq_password=$(read_or_make rabbitmq_password)
mongo_password=$(read_or_make mongo_password)
redis_password=$(read_or_make redis_password)
postgres_password=$(read_or_make postgres_password)
read_or_make grafana_admin_password >/dev/null
qdrant_api_key=$(read_or_make faceval_qdrant_api_key)
read_or_make faceval_pseudonym_secret >/dev/null
read_or_make faceval_etl_pseudonym_secret >/dev/null

# RabbitMQ's image reads /etc/rabbitmq/conf.d/*.conf; Redis and Qdrant read a config file.
write_once rabbitmq.conf "default_user = faceval
default_pass = $rabbitmq_password
"
write_once redis.conf "requirepass $redis_password
"
# Qdrant merges /qdrant/config/local.yaml over its configuration.
write_once qdrant.yaml "service:
  api_key: $qdrant_api_key
"
write_once faceval_broker_url "amqp://faceval:$rabbitmq_password@rabbitmq:5672//"
write_once faceval_redis_url "redis://:$redis_password@redis:6379/0"
write_once faceval_mongo_url "mongodb://faceval:$mongo_password@mongodb:27017/?authSource=admin"
write_once faceval_etl_postgres_url "postgresql://faceval:$postgres_password@postgres:5432/faceval"
# Readable by the containers' own users (their uids differ); the directory stays 0700, so
# no other account on the host can reach them.
chmod 644 "$dir"/*
echo "secrets in $dir: $(ls "$dir" | wc -l) files"
