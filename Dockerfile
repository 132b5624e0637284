# Airbourne in one image: `docker run -p 3005:3005 airbourne` serves every service on the
# embedded defaults; pass --config or AIRBOURNE_* variables for MySQL, RabbitMQ and SMTP.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    AIRBOURNE_SERVER_DATA_DIR=/var/lib/airbourne \
    AIRBOURNE_SERVER_HOST=0.0.0.0

WORKDIR /app
COPY pyproject.toml README.md ./
COPY airbourne ./airbourne
COPY config ./config
RUN pip install --no-cache-dir . \
    && useradd --system --home /var/lib/airbourne airbourne \
    && mkdir -p /var/lib/airbourne && chown airbourne /var/lib/airbourne

USER airbourne
VOLUME /var/lib/airbourne
EXPOSE 3001 3002 3003 3004 3005
STOPSIGNAL SIGTERM
ENTRYPOINT ["airbourne"]
CMD ["serve", "--services", "all"]
