# syntax=docker/dockerfile:1
# delivery in a container, and the image of the compose lab's other services (docker-compose.yml).
#
#   docker build --target engine -t delivery .     the daemon: `delivery serve` reads
#                                                  ./delivery.toml in /etc/delivery (mount it)
#   docker build --target lab -t delivery-lab .    the engine image plus Debian's knot,
#                                                  unbound, postfix and nginx-light
#
# The base image is pinned by version; the Debian packages come from the base image's release
# (bookworm), the same versions scripts/install-lab-tools installs for the lab's tests.

FROM python:3.11.13-slim-bookworm AS engine
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY delivery ./delivery
RUN pip install . && rm -rf /src && mkdir -p /etc/delivery /var/lib/delivery
WORKDIR /etc/delivery
VOLUME ["/var/lib/delivery"]
# Management API (JMAP, /healthz, /metrics) and SMTP submission, as the settings place them.
EXPOSE 8080 2525
ENTRYPOINT ["delivery"]
CMD ["serve"]

FROM engine AS lab
# "No configuration": the package sets up no system mailer; the lab's receivers run their own
# configuration (postfix -c). Debian's images keep services from starting at install.
RUN echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections \
    && apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        knot knot-dnssecutils unbound postfix nginx-light \
    && rm -rf /var/lib/apt/lists/*
ENTRYPOINT []
CMD ["sh", "-c", "echo 'the lab image runs what docker-compose.yml tells it to'; exit 2"]
