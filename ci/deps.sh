#!/usr/bin/env bash
# Installs what `make test` needs on a fresh Debian machine, and nothing when
# it is there already: Postfix (Debian's package), Exim and OpenSMTPD
# (extracted privately), Haraka (npm; with node 20 from the npm registry in a
# private prefix when the machine's node is older, as Debian 12's 18 is),
# chromium (the HTML report's browser test) and redis-server (the fake MTA's
# --greylist-store tests start their own child; the package's service is not
# used). Needs root (or sudo without a password).
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/postfix/postfix.sh install
bash ci/exim/exim.sh install
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v npm >/dev/null || missing+=(npm) # Debian's npm (and its nodejs 18): enough to fetch node 20
if [ ${#missing[@]} -gt 0 ]; then
	as_root apt-get -o DPkg::Lock::Timeout=600 update -qq
	as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}"
fi
bash ci/opensmtpd/opensmtpd.sh install
bash ci/haraka/haraka.sh install
