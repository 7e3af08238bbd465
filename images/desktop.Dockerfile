# The desktop sandbox image: Debian 12, the display, the VNC server, Chromium and noVNC,
# with grexal-sidecar as the entrypoint (PID 1). Package installation is the same script
# the test setup runs, so the image and the tests use the same packages.
#
#   cargo build --release --locked
#   docker build -f images/desktop.Dockerfile -t grexal/desktop-sandbox .

FROM debian:12-slim

COPY scripts/install-packages.sh /usr/local/lib/grexal/install-packages.sh
RUN /usr/local/lib/grexal/install-packages.sh runtime && rm -rf /var/lib/apt/lists/*

# The agent (and the desktop) run unprivileged as `agent`; the daemon runs as root to
# write files owned by it and to switch to it. It needs CAP_SETUID, CAP_SETGID, CAP_CHOWN,
# CAP_FOWNER, CAP_DAC_OVERRIDE and CAP_KILL, all in Docker's default set (images/README.md).
RUN useradd --create-home --uid 1000 --shell /usr/sbin/nologin agent \
 && install -d -m 0755 /run/grexal /var/lib/grexal /etc/grexal

COPY target/release/grexal-sidecar /usr/local/bin/grexal-sidecar

ENV GREXAL_AGENT_USER=agent \
    GREXAL_MANIFEST=/app/grexal.json \
    GREXAL_SOCKET=/run/grexal/sidecar.sock \
    GREXAL_BROWSER_PROFILE=/var/lib/grexal/chromium-profile \
    GREXAL_LOG_FORMAT=json

WORKDIR /app
ENTRYPOINT ["/usr/local/bin/grexal-sidecar", "run"]
# The platform appends `--sandbox-id … --platform-key … -- <agent command>` or sets the
# matching GREXAL_* variables; see the README's configuration table.
CMD ["--", "python3", "/app/agent.py"]
