# smgw-emu: one emulated Smart Meter Gateway per container.
#   docker build -t smgw-emu .
#   docker run -p 47110:47110/udp -v smgw:/var/lib/smgw-emu smgw-emu
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends openssl && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/smgw-emu
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir .
COPY docker/entrypoint.sh /usr/local/bin/smgw-emu-entrypoint
COPY docker/gateway.toml /etc/smgw-emu/gateway.toml
RUN useradd --system --home /var/lib/smgw-emu smgw && mkdir -p /var/lib/smgw-emu && chown smgw /var/lib/smgw-emu
USER smgw
VOLUME /var/lib/smgw-emu
EXPOSE 47110/udp
ENTRYPOINT ["smgw-emu-entrypoint"]
CMD ["run", "--config", "/etc/smgw-emu/gateway.toml"]
