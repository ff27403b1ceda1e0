#!/usr/bin/env bash
# What the tests need besides cargo, installed once (the README's test command runs this):
# - Python packages: the Standard Webhooks verifier (tests/webhooks.rs), the OpenAI SDK
#   (tests/openai_facade.rs), PyJWT and requests (the Kling client, tests/kling_facade.rs),
#   moto's S3 server (tests/durable_results.rs), schemathesis
#   (tests/openapi.rs) and selenium (tests/console.rs);
# - Debian's chromium and chromium-driver, the real browser tests/console.rs drives.
set -euo pipefail
python3 -m pip install -q standardwebhooks openai 'moto[server]' schemathesis selenium PyJWT requests sseclient-py
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi
