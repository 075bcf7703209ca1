#!/usr/bin/env bash
# Spark (tests/spark) needs a Java runtime: Debian's OpenJDK 17 when none is installed.
set -euo pipefail
if ! command -v java >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq openjdk-17-jre-headless >/dev/null
fi
java -version 2>&1 | head -1
