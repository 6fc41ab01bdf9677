#!/bin/bash
# dcc worker bootstrap: EC2 user data for the CPU and GPU groups (Amazon Linux 2023).
#
# The stack renders this file: each quoted placeholder below (DCC_ and a key between double underscores)
# becomes a value of the deployment.
# It installs Docker and Python 3.11, installs dcc from the versioned S3 asset of the repository, writes
# /etc/dcc/worker.env (mode 0600: it holds the Redis AUTH token) and runs `python3 -m worker_agent` as
# the systemd service dcc-worker (Restart=on-failure). Re-running it is harmless.
set -euo pipefail

DCC_CLASS="__DCC_CLASS__"
AWS_REGION="__DCC_REGION__"
DCC_REDIS_HOST="__DCC_REDIS_HOST__"
DCC_REDIS_PORT="__DCC_REDIS_PORT__"
DCC_REDIS_SECRET_ARN="__DCC_REDIS_SECRET_ARN__"
DCC_BUCKET="__DCC_BUCKET__"
DCC_STORAGE="__DCC_STORAGE_URL__"
DCC_ALLOWED_BUCKETS="__DCC_ALLOWED_BUCKETS__"
DCC_TES_LOCATIONS="__DCC_TES_LOCATIONS__"
DCC_ASSET_URL="__DCC_ASSET_URL__"
DCC_GROUP_NAME="__DCC_GROUP_NAME__"
DCC_LOG_LEVEL="__DCC_LOG_LEVEL__"
DCC_WEBSOCKET_ENDPOINT="__DCC_WEBSOCKET_ENDPOINT__"
DCC_GPU_RUNTIME="__DCC_GPU_RUNTIME__"
export AWS_REGION AWS_DEFAULT_REGION="$AWS_REGION"

PYTHON=python3.11
APP_DIR=/opt/dcc
CONF_DIR=/etc/dcc

log() { echo "dcc-bootstrap: $*" | systemd-cat -t dcc-bootstrap -p info 2>/dev/null || echo "dcc-bootstrap: $*"; }

retry() {
    # Package mirrors and the NAT can be slow right after boot: try a few times before failing the boot.
    local attempt
    for attempt in 1 2 3 4 5; do
        if "$@"; then return 0; fi
        log "attempt $attempt of '$*' failed; retrying"
        sleep $((attempt * 5))
    done
    "$@"
}

install_packages() {
    local packages=(docker "$PYTHON" "$PYTHON-pip" unzip amazon-ecr-credential-helper)
    command -v aws >/dev/null 2>&1 || packages+=(awscli-2)
    retry dnf install -y "${packages[@]}"
    systemctl enable --now docker
    # The ECS-optimized (GPU) image starts the ECS agent; dcc does not use ECS.
    if systemctl list-unit-files ecs.service >/dev/null 2>&1; then
        systemctl disable --now ecs.service || true
    fi
}

install_code() {
    local work
    work=$(mktemp -d)
    retry aws s3 cp --only-show-errors "$DCC_ASSET_URL" "$work/code.zip"
    rm -rf "$APP_DIR/src"
    mkdir -p "$APP_DIR/src"
    unzip -q "$work/code.zip" -d "$APP_DIR/src"
    rm -rf "$work"
    "$PYTHON" -m venv "$APP_DIR/venv"
    # the versions the tests ran against (worker-constraints.txt), not whatever PyPI has today
    retry "$APP_DIR/venv/bin/pip" install --quiet --disable-pip-version-check \
        -c "$APP_DIR/src/worker-constraints.txt" "$APP_DIR/src"
}

redis_token() {
    aws secretsmanager get-secret-value --secret-id "$DCC_REDIS_SECRET_ARN" --query SecretString --output text
}

write_config() {
    local token instance_id imds_token slots_line=""
    token=$(retry redis_token)
    imds_token=$(curl -sf -X PUT http://169.254.169.254/latest/api/token \
        -H "X-aws-ec2-metadata-token-ttl-seconds: 300")
    instance_id=$(curl -sf -H "X-aws-ec2-metadata-token: $imds_token" \
        http://169.254.169.254/latest/meta-data/instance-id)
    # CPU workers never look for GPUs; GPU workers detect them with nvidia-smi.
    if [ "$DCC_CLASS" = "cpu" ]; then slots_line="DCC_GPUS=0"; fi
    install -d -m 0700 "$CONF_DIR" "$CONF_DIR/docker"
    # Docker pulls from this account's ECR with the instance role (credential helper).
    printf '{"credHelpers": {"%s": "ecr-login"}}\n' \
        "$(aws sts get-caller-identity --query Account --output text).dkr.ecr.$AWS_REGION.amazonaws.com" \
        > "$CONF_DIR/docker/config.json"
    umask 077
    cat > "$CONF_DIR/worker.env" <<ENV
REDIS_URL=rediss://:$token@$DCC_REDIS_HOST:$DCC_REDIS_PORT/0
DCC_REDIS_SECRET_ARN=$DCC_REDIS_SECRET_ARN
DCC_STORAGE=$DCC_STORAGE
DCC_BUCKET=$DCC_BUCKET
DCC_ALLOWED_BUCKETS=$DCC_ALLOWED_BUCKETS
DCC_TES_LOCATIONS=$DCC_TES_LOCATIONS
DCC_WORKER_CLASS=$DCC_CLASS
DCC_WORKER_ID=$instance_id
DCC_AUTOSCALING_GROUP=$DCC_GROUP_NAME
DCC_WORK_DIR=/var/lib/dcc/work
DOCKER_CONFIG=$CONF_DIR/docker
AWS_REGION=$AWS_REGION
AWS_DEFAULT_REGION=$AWS_REGION
LOG_LEVEL=$DCC_LOG_LEVEL
DCC_IMDS=true
DCC_WEBSOCKET_ENDPOINT=$DCC_WEBSOCKET_ENDPOINT
DCC_GPU_RUNTIME=$DCC_GPU_RUNTIME
$slots_line
ENV
}

install_service() {
    install -d -m 0700 /var/lib/dcc/work
    cat > /etc/systemd/system/dcc-worker.service <<UNIT
[Unit]
Description=dcc worker ($DCC_CLASS)
After=docker.service network-online.target
Wants=network-online.target
Requires=docker.service

[Service]
EnvironmentFile=$CONF_DIR/worker.env
ExecStart=$APP_DIR/venv/bin/python3 -m worker_agent
Restart=on-failure
RestartSec=5
# SIGTERM: stop claiming, finish running jobs within DCC_GRACE_SECONDS (60 s), hand back the rest.
KillSignal=SIGTERM
TimeoutStopSec=120

[Install]
WantedBy=multi-user.target
UNIT
    systemctl daemon-reload
    systemctl enable dcc-worker.service
    systemctl restart dcc-worker.service
}

main() {
    log "bootstrapping a $DCC_CLASS worker"
    install_packages
    install_code
    write_config
    install_service
    log "dcc-worker started"
}

main "$@"
