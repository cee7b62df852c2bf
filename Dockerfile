# syntax=docker/dockerfile:1
# The connector in a container: slim Python, a non-root user, config and state as volumes.
#   docker build -t oomnitza-connector .                       # core + every source's extra
#   docker build --build-arg EXTRAS=ldap -t oomnitza-connector .  # core + only what you need
#   docker run --rm -v "$PWD/config:/config:ro" -v connector-state:/data oomnitza-connector upload csv_assets
ARG PYTHON_VERSION=3.12

FROM python:${PYTHON_VERSION}-slim AS build
ARG EXTRAS=all
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# Wheels for the package and everything it needs, so the runtime image gets no compiler or cache.
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[${EXTRAS}]"

FROM python:${PYTHON_VERSION}-slim
# The state directory is the working directory, /data; the log files go there too (the image's
# own folder is read-only). Both can be moved: OOMNITZA_STATE_DIR, OOMNITZA_LOG_DIR, --log-dir.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    OOMNITZA_LOG_DIR=/data/logs
RUN useradd --uid 10001 --user-group --home-dir /data --no-create-home connector \
    && mkdir -p /config /data /opt/connector \
    && chown connector:connector /data
COPY --from=build /wheels /wheels
# Exactly the wheels resolved in the build stage (package, extras and their pinned dependencies).
RUN pip install --no-cache-dir --no-index /wheels/*.whl \
    && rm -rf /wheels
# connector.py reads config.ini and logging.json beside itself: point both at the /config volume.
# Without a /config/logging.json, logs go to the console (the container's log stream) and to
# info.log and errors.log in /data/logs.
COPY connector.py server.py strongbox.py /opt/connector/
RUN ln -s /config/config.ini /opt/connector/config.ini \
    && ln -s /config/logging.json /opt/connector/logging.json
WORKDIR /data
VOLUME ["/config", "/data"]
USER 10001:10001
EXPOSE 8000
ENTRYPOINT ["python", "/opt/connector/connector.py"]
CMD ["managed"]
