#!/usr/bin/env bash
# The web-page test drives Debian's Chromium (playwright-core cannot download browsers
# offline). Install it when missing; needs root or sudo and Debian's package mirrors.
set -euo pipefail
[ -x /usr/bin/chromium ] && exit 0
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "installing Debian's chromium for the browser test..." >&2
$SUDO apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >&2
