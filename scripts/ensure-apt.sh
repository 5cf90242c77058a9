#!/bin/sh
# Install the Debian packages named on the command line that are not installed yet.
# Runs `apt-get update` only when something is missing.  Needs root (or sudo).
set -eu
missing=""
for p in "$@"; do
    if ! dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^ii'; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0
echo "ensure-apt: installing$missing"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q >/dev/null || { echo "ensure-apt: apt-get update failed" >&2; exit 1; }
# shellcheck disable=SC2086
$SUDO apt-get install -y -q --no-install-recommends $missing >/dev/null || {
    echo "ensure-apt: apt-get install$missing failed" >&2; exit 1; }
