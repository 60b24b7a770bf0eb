// The privtune demo app. Two flavours of one source tree:
//   ort    app/src/main + app/src/ort (ONNX Runtime inference + training): the real app
//   shell  app/src/main only: what android_demo/build.sh builds offline (says "ONNX Runtime is not in
//          this build" and classifies/trains nothing)
// Build on a machine with internet:  gradle :app:assembleOrtDebug :app:assembleOrtDebugAndroidTest
// JVM unit tests (app/src/test):     gradle :app:testOrtDebugUnitTest :core:test
plugins {
    id("com.android.application")
}

android {
    namespace = "dev.privtune.demo"
    compileSdk = 34

    defaultConfig {
        applicationId = "dev.privtune.demo"
        minSdk = 21 // classification works from API 21; on-device training needs API 26 (ORT's Java training API uses java.nio.file)
        targetSdk = 34
        versionCode = 1
        versionName = "0.1.0"
        // android.test APIs (no androidx): app/src/androidTest uses AndroidTestCase & co.
        testInstrumentationRunner = "android.test.InstrumentationTestRunner"
    }

    flavorDimensions += "runtime"
    productFlavors {
        create("ort") {
            dimension = "runtime"
        }
        create("shell") {
            dimension = "runtime"
        }
    }

    useLibrary("android.test.runner")
    useLibrary("android.test.base")
    useLibrary("android.test.mock")

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_1_8
        targetCompatibility = JavaVersion.VERSION_1_8
    }

    buildTypes {
        release {
            isMinifyEnabled = false
            proguardFiles(getDefaultProguardFile("proguard-android-optimize.txt"), "proguard-rules.pro")
        }
    }
}

dependencies {
    implementation(project(":core"))
    // ONNX Runtime with the training API (OrtTrainingSession), Android AAR from Maven Central.
    "ortImplementation"("com.microsoft.onnxruntime:onnxruntime-training-android:1.19.2")
    testImplementation("junit:junit:4.13.2")
}
