#!/bin/sh
# Demo customization script (fetched by sha256 from the template's folder): offline, idempotent.
set -eu
sudo mkdir -p /usr/local/bin
sudo tee /usr/local/bin/aib-demo-info >/dev/null <<'INFO'
#!/bin/sh
echo "image built by aib-sdk on $(cat /etc/aib-demo-built 2>/dev/null || echo unknown)"
cat /etc/os-release | grep PRETTY_NAME
INFO
sudo chmod 0755 /usr/local/bin/aib-demo-info
date -u +%Y-%m-%dT%H:%M:%SZ | sudo tee /etc/aib-demo-built >/dev/null
# Generalize like AIB's deprovisioning: no machine identity baked into the image.
sudo truncate -s 0 /etc/machine-id
echo "setup.sh done on $(uname -r)"
