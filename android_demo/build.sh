#!/usr/bin/env bash
# Offline build of the privtune demo app's ORT-FREE SHELL (issue 8), with Debian's toolchain and the
# cached Debian 11 debs in ../shared/tools/android-debs (android.jar API 23, dx):
#
#   core (javac --release 8) + app/src/main (aapt2, javac --release 8) -> JVM unit tests of the app's
#   pure-Java classes (JUnit 4) -> dx --min-sdk-version=21 -> aapt add (zip) -> zipalign -p 4 -> apksigner sign
#   (fresh debug key made by keytool for this build, deleted afterwards) -> apksigner verify -> aapt dump
#   badging; plus the instrumentation test APK (app/src/androidTest, android.test APIs) signed with the
#   same key.
#
# EXCLUDED BY DESIGN: app/src/ort (ONNX Runtime classes). onnxruntime-training-android is an AAR on
# Maven Central that this machine cannot fetch; those classes are only type-checked here against the
# ORT API signatures in scripts/ort_api_stubs (never packaged) and build for real with Gradle
# (app/build.gradle.kts, flavour "ort") on a machine with internet.
#
#   android_demo/build.sh [OUT_DIR]      default OUT_DIR: android_demo/build (git-ignored)
#
# Any failing step stops the build with "BUILD FAILED at <step>" and a non-zero status.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
OUT="$(mkdir -p "${1:-$HERE/build}" && cd "${1:-$HERE/build}" && pwd)"
DEBS="${PRIVTUNE_ANDROID_DEBS:-$REPO/../shared/tools/android-debs}"
CORE_SRC="$HERE/core/src/main/java"
APP="$HERE/app"
STUBS="$HERE/scripts/ort_api_stubs"
TEST_MANIFEST="$HERE/scripts/androidTest/AndroidManifest.xml"
PACKAGE=dev.privtune.demo
MIN_SDK=21
TARGET_SDK=23
VERSION_CODE=1
VERSION_NAME=0.1.0
JUNIT_CP=/usr/share/java/junit4.jar:/usr/share/java/hamcrest-core.jar

STEP="start"
trap 'echo "BUILD FAILED at step: $STEP (exit $?)" >&2' ERR
BUILD_START=$(date +%s.%N)
step() { STEP="$1"; echo "== $1"; }
elapsed() { echo "$(date +%s.%N) $1" | awk '{printf "%.1f", $1 - $2}'; }
die() { echo "BUILD FAILED at step: $STEP: $*" >&2; exit 1; }

step "toolchain"
for tool in javac java jar aapt2 aapt zipalign apksigner keytool dpkg-deb sha256sum; do
  command -v "$tool" >/dev/null || die "'$tool' not found; run scripts/android_toolchain.sh (Debian: android-sdk android-sdk-build-tools openjdk-17-jdk-headless)"
done
for jar in ${JUNIT_CP//:/ }; do [ -f "$jar" ] || die "$jar missing; run scripts/android_toolchain.sh (junit4, libhamcrest-java)"; done
[ -d "$DEBS" ] || die "$DEBS not found (the cached Debian 11 debs: android.jar API 23 and dx)"

step "unpack android.jar + dx from the cached debs (SHA256SUMS checked)"
(cd "$DEBS" && sha256sum --quiet -c SHA256SUMS) || die "the debs in $DEBS do not match their SHA256SUMS"
ROOT="$OUT/android-root"
STAMP="$ROOT/.sha256sums"
if ! cmp -s "$DEBS/SHA256SUMS" "$STAMP" 2>/dev/null; then
  rm -rf "$ROOT" && mkdir -p "$ROOT"
  for deb in "$DEBS"/*.deb; do dpkg-deb -x "$deb" "$ROOT"; done
  cp "$DEBS/SHA256SUMS" "$STAMP"
fi
ANDROID_JAR="$ROOT/usr/share/java/com.android.android-23.jar"
DX_JAR="$ROOT/usr/share/java/com.android.dx-10.0.0.jar"
[ -f "$ANDROID_JAR" ] || die "android.jar not found at $ANDROID_JAR"
[ -f "$DX_JAR" ] || die "dx.jar not found at $DX_JAR"

W="$OUT/work"
rm -rf "$W" && mkdir -p "$W"/{core,res,gen,classes,apicheck,ortcheck,test-classes,androidtest-classes,androidtest-gen,dex,androidtest-dex}
rm -f "$OUT"/*.apk "$OUT"/*.idsig

step "core: javac --release 8 (android_demo/core/src/main/java, without the tools/ command-line mains)"
find "$CORE_SRC" -name '*.java' -not -path '*/core/tools/*' | sort > "$W/core-sources.txt"
javac --release 8 -encoding UTF-8 -nowarn -d "$W/core" @"$W/core-sources.txt"
(cd "$W/core" && jar cf "$OUT/privtune-core.jar" .)

step "resources: aapt2 compile + link (package $PACKAGE, minSdk $MIN_SDK, targetSdk $TARGET_SDK)"
# AGP takes the package from build.gradle.kts (namespace); aapt2 needs it in the manifest.
! grep -q 'package=' "$APP/src/main/AndroidManifest.xml" || die "app/src/main/AndroidManifest.xml must not set package= (AGP 8: namespace)"
sed "s|<manifest |<manifest package=\"$PACKAGE\" |" "$APP/src/main/AndroidManifest.xml" > "$W/AndroidManifest.xml"
grep -q "package=\"$PACKAGE\"" "$W/AndroidManifest.xml" || die "could not set the package in the manifest"
aapt2 compile --dir "$APP/src/main/res" -o "$W/res/res.zip"
aapt2 link -o "$W/app-unsigned.apk" -I "$ANDROID_JAR" --manifest "$W/AndroidManifest.xml" \
  --min-sdk-version $MIN_SDK --target-sdk-version $TARGET_SDK \
  --version-code $VERSION_CODE --version-name $VERSION_NAME --java "$W/gen" "$W/res/res.zip"

step "app shell: javac --release 8 (app/src/main/java + R.java) against android.jar"
find "$APP/src/main/java" "$W/gen" -name '*.java' | sort > "$W/app-sources.txt"
javac --release 8 -encoding UTF-8 -Xlint:all -Xlint:-options -Werror -cp "$ANDROID_JAR:$W/core" -d "$W/classes" @"$W/app-sources.txt"

step "API check: core + app compiled against android.jar's own java.* (API 23) instead of the JDK's"
javac -source 8 -target 8 -Xlint:-options -encoding UTF-8 -nowarn -bootclasspath "$ANDROID_JAR" -d "$W/apicheck" \
  @"$W/core-sources.txt" @"$W/app-sources.txt"

step "ORT classes: present, EXCLUDED from this APK, type-checked against scripts/ort_api_stubs (compile only)"
ORT_SOURCES=(OrtRuntime OrtClassifier OrtLocalTrainer OrtStepRunner ExportedModels)
for cls in "${ORT_SOURCES[@]}"; do
  [ -f "$APP/src/ort/java/dev/privtune/demo/ort/$cls.java" ] || die "app/src/ort is missing $cls.java"
done
find "$STUBS" -name '*.java' | sort > "$W/stub-sources.txt"
find "$APP/src/ort/java" -name '*.java' | sort > "$W/ort-sources.txt"
javac --release 8 -encoding UTF-8 -nowarn -cp "$ANDROID_JAR:$W/core:$W/classes" -d "$W/ortcheck" \
  @"$W/stub-sources.txt" @"$W/ort-sources.txt"
echo "   ${#ORT_SOURCES[@]} ORT classes type-check; NOT dexed (they need the onnxruntime-training-android AAR: Gradle only)"

step "JVM unit tests of the app's pure-Java classes (app/src/test, JUnit 4)"
find "$APP/src/test/java" -name '*.java' | sort > "$W/test-sources.txt"
javac --release 8 -encoding UTF-8 -nowarn -cp "$ANDROID_JAR:$W/core:$W/classes:$JUNIT_CP" -d "$W/test-classes" @"$W/test-sources.txt"
TEST_CLASSES=$(cd "$APP/src/test/java" && find . -name '*Test.java' | sed 's|^\./||; s|\.java$||; s|/|.|g' | sort | tr '\n' ' ')
# android.jar last: the tests only touch pure-Java classes (an android.* call would throw "Stub!")
java -cp "$W/test-classes:$W/classes:$W/core:$JUNIT_CP:$ANDROID_JAR" org.junit.runner.JUnitCore $TEST_CLASSES \
  | tee "$W/junit.txt" | grep -E '^(OK|Tests run|FAILURES)|^[0-9]+\) ' || true
grep -q '^OK (' "$W/junit.txt" || die "JVM unit tests failed (see $W/junit.txt)"

step "dex: dx --min-sdk-version=$MIN_SDK (app shell + core)"
java -cp "$DX_JAR" com.android.dx.command.Main --dex --min-sdk-version=$MIN_SDK \
  --output="$W/dex/classes.dex" "$W/classes" "$W/core"

step "package + zipalign -p 4"
cp "$W/app-unsigned.apk" "$W/app-unaligned.apk"
(cd "$W/dex" && aapt add -v "$W/app-unaligned.apk" classes.dex >/dev/null)
zipalign -p -f 4 "$W/app-unaligned.apk" "$W/app-aligned.apk"

step "instrumentation test APK (app/src/androidTest, android.test.InstrumentationTestRunner)"
aapt2 link -o "$W/androidtest-unsigned.apk" -I "$ANDROID_JAR" --manifest "$TEST_MANIFEST" \
  --min-sdk-version $MIN_SDK --target-sdk-version $TARGET_SDK \
  --version-code $VERSION_CODE --version-name $VERSION_NAME --java "$W/androidtest-gen"
find "$APP/src/androidTest/java" "$W/androidtest-gen" -name '*.java' | sort > "$W/androidtest-sources.txt"
javac --release 8 -encoding UTF-8 -nowarn -cp "$ANDROID_JAR:$W/core:$W/classes" -d "$W/androidtest-classes" @"$W/androidtest-sources.txt"
java -cp "$DX_JAR" com.android.dx.command.Main --dex --min-sdk-version=$MIN_SDK \
  --output="$W/androidtest-dex/classes.dex" "$W/androidtest-classes"
cp "$W/androidtest-unsigned.apk" "$W/androidtest-unaligned.apk"
(cd "$W/androidtest-dex" && aapt add -v "$W/androidtest-unaligned.apk" classes.dex >/dev/null)
zipalign -p -f 4 "$W/androidtest-unaligned.apk" "$W/androidtest-aligned.apk"

step "sign both APKs with a debug key generated for this build (never kept, never committed)"
KS="$W/debug.keystore"
PASS="$(head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 20)"
keytool -genkeypair -keystore "$KS" -storetype PKCS12 -storepass "$PASS" -keypass "$PASS" -alias androiddebugkey \
  -keyalg RSA -keysize 2048 -validity 365 -dname "CN=privtune debug build,O=privtune,C=US" >/dev/null 2>&1
APK="$OUT/privtune-demo-shell.apk"
TEST_APK="$OUT/privtune-demo-shell-androidTest.apk"
apksigner sign --ks "$KS" --ks-pass "pass:$PASS" --key-pass "pass:$PASS" --out "$APK" "$W/app-aligned.apk"
apksigner sign --ks "$KS" --ks-pass "pass:$PASS" --key-pass "pass:$PASS" --out "$TEST_APK" "$W/androidtest-aligned.apk"
rm -f "$KS"

step "verify: apksigner verify --verbose, zipalign -c"
apksigner verify --verbose "$APK" | tee "$W/verify.txt"
grep -q '^Verifies' "$W/verify.txt" || die "apksigner did not verify $APK"
apksigner verify "$TEST_APK" || die "apksigner did not verify $TEST_APK"
zipalign -c -p 4 "$APK" || die "$APK is not 4-byte aligned"

step "aapt dump badging"
aapt dump badging "$APK" | tee "$OUT/badging.txt" | grep -E "^(package|sdkVersion|targetSdkVersion|uses-permission|launchable-activity)"

APK_BYTES=$(stat -c %s "$APK")
DEX_BYTES=$(stat -c %s "$W/dex/classes.dex")
JUNIT_LINE=$(grep '^OK (' "$W/junit.txt")
cat <<EOF

BUILD OK in $(elapsed "$BUILD_START") s
  APK:       $APK ($APK_BYTES bytes; classes.dex $DEX_BYTES bytes)
  test APK:  $TEST_APK
  JVM tests: $JUNIT_LINE
  NOT IN THIS APK (by design): app/src/ort (ONNX Runtime inference + training). The app shows
  "ONNX Runtime is not in this build" and classifies/trains nothing. Build the 'ort' flavour with
  Gradle on a machine with internet: see android_demo/README.md.
EOF
