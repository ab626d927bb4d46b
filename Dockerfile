# cipherdrop server and client image: python:3.11-slim, runtime dependencies only,
# running as an unprivileged user. Build: docker build -t cipherdrop .
# The default command runs the whole server (broker + workers) in one container; the
# docker-compose.yml runs each part as its own service instead.

FROM python:3.11-slim AS build
WORKDIR /src
# .dockerignore keeps tests, docs, benchmarks, virtualenvs and any data out of the context.
COPY . .
# Wheels of cipherdrop and its runtime dependencies only (no dev or bench extras).
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CIPHERDROP_DATA=/data \
    CIPHERDROP_LOG_FORMAT=json
# /data is created here, owned by the user and mode 0700, so a named volume mounted
# there starts with that owner and mode.
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/cipherdrop \
        cipherdrop \
    && install -d -m 0700 -o cipherdrop -g cipherdrop /data /home/cipherdrop/.cipherdrop
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index /wheels/*.whl && rm -rf /wheels
USER cipherdrop
WORKDIR /home/cipherdrop
EXPOSE 5555
CMD ["cipherdrop-server", "--endpoint", "tcp://*:5555"]
