# Coalmine: one image for every part (gateway, control API, controller, serve-model),
# chosen by the command: `coalmine gateway --config FILE`, `coalmine serve ...`.
#
#   docker build -t coalmine .
#   docker run --rm -p 8080:8080 -p 8900:8900 -v "$PWD/coalmine.yaml:/etc/coalmine/coalmine.yaml:ro" \
#     -e COALMINE_TOKEN -e COALMINE_STORE_URL coalmine serve --config /etc/coalmine/coalmine.yaml
#
# Nothing secret is built in: the API token ($COALMINE_TOKEN), the store's URL with its
# password ($COALMINE_STORE_URL) and the feedback token ($COALMINE_FEEDBACK_TOKEN) come from
# the environment at run time (a Kubernetes Secret: deploy/kubernetes/). docs/deploy.md.

# The package is built into a wheel in a stage of its own, so the sources never reach the
# final image's layers.
FROM python:3.11-slim-bookworm AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY coalmine ./coalmine
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# postgres: the store on PostgreSQL (psycopg); k8s: the gateway-api, istio and kserve
# traffic providers. Every dependency ships wheels for this platform: no compiler needed.
COPY --from=wheel /wheels /tmp/wheels
RUN pip install "$(ls /tmp/wheels/coalmine-*.whl)[postgres,k8s]" \
    && rm -rf /tmp/wheels \
    && groupadd --system --gid 10001 coalmine \
    && useradd --system --uid 10001 --gid coalmine --home-dir /var/lib/coalmine \
       --create-home --shell /usr/sbin/nologin coalmine
# A working directory the user owns: a one-machine run's SQLite store (mount a volume).
WORKDIR /var/lib/coalmine
# Numeric, so Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
USER 10001:10001
# gateway (data plane), control API and dashboard
EXPOSE 8080 8900
ENTRYPOINT ["coalmine"]
CMD ["--help"]
