#!/usr/bin/env bash
# Install what the book's browser test needs: Debian's chromium and chromium-driver, and npm
# (which fetches the book's pinned MathJax). Does nothing when they are all there already.
set -euo pipefail
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -eq 0 ]; then
  echo "chromium, chromedriver and npm are installed"
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  sudo=(sudo)
else
  echo "error: installing ${missing[*]} needs root: run 'sudo apt-get install ${missing[*]}'," \
       "or leave them out (the browser test then skips)" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null; then
  echo "error: no apt-get here; install ${missing[*]} with your system's package manager" >&2
  exit 1
fi
echo "installing ${missing[*]} with apt-get"
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}"
