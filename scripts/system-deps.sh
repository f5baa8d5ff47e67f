#!/usr/bin/env bash
# Install the Debian/Ubuntu packages weldmon's tests and daemon need, only when missing:
# Mosquitto (broker for integration tests), PulseAudio + utilities (a null sink is the test
# sound device), PortAudio and the ALSA pulse plugin (sounddevice capture), libsndfile, and
# the Python venv module, strace (runs the daemon under the units' system-call refusals in
# tests/test_faults_syscalls.py) and Chromium (the console's browser tests drive it with
# Playwright). Idempotent; uses sudo when not root.
set -euo pipefail

packages=(
  python3-venv
  mosquitto mosquitto-clients
  pulseaudio pulseaudio-utils
  libportaudio2 libasound2-plugins alsa-utils
  libsndfile1
  openssl
  tmux
  strace
  chromium
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
echo "system-deps: installing ${missing[*]}" >&2
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
