# One image for every shoal process; the command selects which one runs (docker-compose.yml).
#
# BASE_IMAGE is any image with Python 3.11+ and its venv module: python:3.11-slim by default, or the Debian
# image scripts/docker-images.sh makes with debootstrap (Debian's python3 is "externally managed", so the
# dependencies always go into a venv, /opt/shoal). PIP_INSTALL_ARGS lets that script install them offline
# from the wheels it put in docker/wheelhouse ("--no-index --find-links /wheelhouse"); by default they come
# from the package index. The sources are not pip-installed: they run from /app (PYTHONPATH).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
ARG PIP_INSTALL_ARGS=""
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/shoal \
    PATH=/opt/shoal/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONPATH=/app \
    SHOAL_HOST=0.0.0.0
WORKDIR /app
CMD ["python", "-m", "services.gateway"]
COPY pyproject.toml docker/wheelhouse/ /wheelhouse/
RUN python3 -m venv /opt/shoal \
 && python3 -c "import tomllib; print('\n'.join(tomllib.load(open('/wheelhouse/pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
 && /opt/shoal/bin/python -m pip install --quiet $PIP_INSTALL_ARGS -r /tmp/requirements.txt \
 && rm -rf /wheelhouse /tmp/requirements.txt \
 && nats-server --version
# The sources last, in one layer (.dockerignore lets only shoal/, services/ and agent/ through, besides the
# two inputs above): a source change rebuilds only this step.
COPY . /app/
