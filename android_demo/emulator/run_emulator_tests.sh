#!/usr/bin/env bash
# Emulator tests of the privtune demo app (issue 8): boot an Android emulator, install the app and its
# instrumentation APK, start `privtune serve` on this host (reached from the emulator as 10.0.2.2),
# enroll the emulator as a device, open a round, push the bundle, and run the androidTest suite,
# including ParticipationE2ETest: classify -> train (ORT, local DP) -> upload, accepted by the server.
#
# Needs: an Android SDK with `adb` and `emulator` and an AVD (API 26+ for the training step), the
# Gradle-built ORT APKs (gradle :app:assembleOrtDebug :app:assembleOrtDebugAndroidTest), and a bundle
# + classifier folder from `privtune export`. The shell APK from build.sh has no ONNX Runtime, so the
# classify -> train -> upload test cannot pass with it.
#
#   PRIVTUNE_BUNDLE=DIR PRIVTUNE_CLASSIFIER=DIR [PRIVTUNE_AVD=name] [PRIVTUNE_APK=..] [PRIVTUNE_TEST_APK=..] \
#     android_demo/emulator/run_emulator_tests.sh
#
# Exit status: 0 all tests passed against the server; 1 a test or a step failed; 2 missing inputs
# (APKs, bundle); 77 SKIPPED: no Android emulator/SDK on this machine (printed as such, never a pass).
set -uo pipefail

SKIPPED=77
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DEMO="$(cd "$HERE/.." && pwd)"
REPO="$(cd "$DEMO/.." && pwd)"
PRIVTUNE="${PRIVTUNE:-$REPO/.venv/bin/privtune}"
APK="${PRIVTUNE_APK:-$DEMO/app/build/outputs/apk/ort/debug/app-ort-debug.apk}"
TEST_APK="${PRIVTUNE_TEST_APK:-$DEMO/app/build/outputs/apk/androidTest/ort/debug/app-ort-debug-androidTest.apk}"
PACKAGE=dev.privtune.demo
RUNNER="$PACKAGE.test/android.test.InstrumentationTestRunner"
DEVICE_BUNDLE="/sdcard/Android/data/$PACKAGE/files/bundle"
PORT="${PRIVTUNE_PORT:-8711}"
BOOT_TIMEOUT_S="${PRIVTUNE_BOOT_TIMEOUT:-600}"

say() { echo "[emulator] $*"; }
skip() {
  echo "SKIPPED: no Android emulator/SDK on this machine ($*)"
  echo "SKIPPED: instrumentation tests and classify -> train -> upload were NOT run"
  exit $SKIPPED
}
fail() { echo "FAILED: $*" >&2; exit 1; }

# ---------------------------------------------------------------- find the SDK, or skip visibly
SDK="${ANDROID_SDK_ROOT:-${ANDROID_HOME:-}}"
ADB="$(command -v adb || true)"
EMULATOR="$(command -v emulator || true)"
if [ -n "$SDK" ]; then
  [ -z "$ADB" ] && [ -x "$SDK/platform-tools/adb" ] && ADB="$SDK/platform-tools/adb"
  [ -z "$EMULATOR" ] && [ -x "$SDK/emulator/emulator" ] && EMULATOR="$SDK/emulator/emulator"
fi
[ -n "$ADB" ] || skip "adb not found on PATH or under \$ANDROID_SDK_ROOT/platform-tools"
[ -n "$EMULATOR" ] || skip "emulator not found on PATH or under \$ANDROID_SDK_ROOT/emulator"
AVD="${PRIVTUNE_AVD:-$("$EMULATOR" -list-avds 2>/dev/null | head -n1)}"
[ -n "$AVD" ] || skip "no AVD (create one: sdkmanager 'system-images;android-34;google_apis;x86_64' && avdmanager create avd ...)"
if [ ! -e /dev/kvm ] && [ -z "${PRIVTUNE_ALLOW_NO_KVM:-}" ]; then
  skip "/dev/kvm missing: an x86_64 emulator without acceleration is too slow (set PRIVTUNE_ALLOW_NO_KVM=1 to try anyway)"
fi

# ---------------------------------------------------------------- inputs
[ -f "$APK" ] || { echo "MISSING: $APK (gradle :app:assembleOrtDebug)" >&2; exit 2; }
[ -f "$TEST_APK" ] || { echo "MISSING: $TEST_APK (gradle :app:assembleOrtDebugAndroidTest)" >&2; exit 2; }
[ -n "${PRIVTUNE_BUNDLE:-}" ] && [ -f "$PRIVTUNE_BUNDLE/manifest.json" ] || { echo "MISSING: PRIVTUNE_BUNDLE=<bundle dir from privtune export>" >&2; exit 2; }
[ -n "${PRIVTUNE_CLASSIFIER:-}" ] && [ -d "$PRIVTUNE_CLASSIFIER" ] || { echo "MISSING: PRIVTUNE_CLASSIFIER=<classifier dir the bundle was exported from>" >&2; exit 2; }
[ -x "$PRIVTUNE" ] || { echo "MISSING: $PRIVTUNE (the privtune CLI; make install)" >&2; exit 2; }

WORK="$(mktemp -d /tmp/privtune-emulator.XXXXXX)"
EMU_PID=""
SERVER_PID=""
cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null
  if [ -n "$EMU_PID" ]; then
    "$ADB" -s "emulator-$EMU_PORT" emu kill >/dev/null 2>&1 || kill "$EMU_PID" 2>/dev/null
  fi
  say "logs in $WORK"
}
trap cleanup EXIT

# ---------------------------------------------------------------- boot
EMU_PORT="${PRIVTUNE_EMULATOR_PORT:-5584}"
SERIAL="emulator-$EMU_PORT"
say "booting AVD $AVD on port $EMU_PORT"
"$EMULATOR" -avd "$AVD" -port "$EMU_PORT" -no-window -no-audio -no-snapshot -no-boot-anim >"$WORK/emulator.log" 2>&1 &
EMU_PID=$!
START=$(date +%s)
"$ADB" -s "$SERIAL" wait-for-device
until [ "$("$ADB" -s "$SERIAL" shell getprop sys.boot_completed 2>/dev/null | tr -d '\r')" = "1" ]; do
  kill -0 "$EMU_PID" 2>/dev/null || fail "the emulator exited (see $WORK/emulator.log)"
  [ $(( $(date +%s) - START )) -lt "$BOOT_TIMEOUT_S" ] || fail "the emulator did not boot in $BOOT_TIMEOUT_S s"
  sleep 3
done
API=$("$ADB" -s "$SERIAL" shell getprop ro.build.version.sdk | tr -d '\r')
say "booted in $(( $(date +%s) - START )) s (API $API)"
[ "$API" -ge 26 ] || fail "AVD $AVD runs API $API; on-device training needs API 26+"

# ---------------------------------------------------------------- host aggregator
export PRIVTUNE_ADMIN_TOKEN="emulator-admin-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
say "starting privtune serve on 127.0.0.1:$PORT"
"$PRIVTUNE" serve --db "sqlite:///$WORK/state.db" --adapter "$PRIVTUNE_CLASSIFIER" --bundle "$PRIVTUNE_BUNDLE" \
  --publish-dir "$WORK/published" --port "$PORT" --clients-per-round 1 --local-steps 3 --local-sampling-rate 0.5 \
  --round-duration 900 --local-epsilon-budget 50 >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
URL="http://127.0.0.1:$PORT"
for _ in $(seq 60); do curl -fsS "$URL/v1/health" >/dev/null 2>&1 && break; sleep 1; done
kill -0 "$SERVER_PID" 2>/dev/null || fail "privtune serve exited (see $WORK/server.log)"
ENROLL=$("$PRIVTUNE" enroll --url "$URL") || fail "privtune enroll failed"
DEVICE_ID=$(echo "$ENROLL" | python3 -c 'import json,sys; print(json.load(sys.stdin)["device_id"])')
SECRET=$(echo "$ENROLL" | python3 -c 'import json,sys; print(json.load(sys.stdin)["secret"])')
"$PRIVTUNE" open-round --url "$URL" >"$WORK/open-round.json" || fail "privtune open-round failed"
say "device $DEVICE_ID enrolled; round open"

# ---------------------------------------------------------------- install, push the bundle, run
"$ADB" -s "$SERIAL" install -r -t "$APK" || fail "adb install $APK"
"$ADB" -s "$SERIAL" install -r -t "$TEST_APK" || fail "adb install $TEST_APK"
"$ADB" -s "$SERIAL" shell mkdir -p "$DEVICE_BUNDLE"
"$ADB" -s "$SERIAL" push "$PRIVTUNE_BUNDLE/." "$DEVICE_BUNDLE/" >/dev/null || fail "adb push of the bundle"
say "running the instrumentation tests"
"$ADB" -s "$SERIAL" shell am instrument -w -r \
  -e server_url "http://10.0.2.2:$PORT" -e device_id "$DEVICE_ID" -e secret_hex "$SECRET" -e bundle_dir "$DEVICE_BUNDLE" \
  "$RUNNER" | tee "$WORK/instrument.txt"
grep -q "^OK (" "$WORK/instrument.txt" || fail "instrumentation tests did not pass (see $WORK/instrument.txt)"
ACCEPTED=$("$PRIVTUNE" status --url "$URL" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["accepted_total"])')
[ "$ACCEPTED" -ge 1 ] || fail "the server accepted no update from the emulator"
echo "PASSED: $(grep '^OK (' "$WORK/instrument.txt"); server accepted $ACCEPTED update(s) from $DEVICE_ID"
