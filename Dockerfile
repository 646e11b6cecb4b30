# One image for every shoal process; the command selects which one runs.
# The base is an ARG so machines without registry access can pass a locally built Python image.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
WORKDIR /app
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 SHOAL_HOST=0.0.0.0
COPY pyproject.toml README.md ./
COPY shoal shoal
COPY services services
COPY agent agent
RUN python3 -m pip install --no-cache-dir .
CMD ["python3", "-m", "services.gateway"]
