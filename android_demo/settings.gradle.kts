// Gradle build of the privtune Android demo, for a machine WITH internet (Google Maven + Maven Central).
// It cannot run on the offline build machines: there, android_demo/build.sh builds the ORT-free shell.
// Needs JDK 17 and Gradle 8.7+ (no wrapper is committed: run `gradle wrapper --gradle-version 8.7` once).
pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}

dependencyResolutionManagement {
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        google()
        mavenCentral()
    }
}

rootProject.name = "privtune-android-demo"

// core/ is the pure-JVM library (also a Maven project: core/pom.xml, used offline); it is configured as
// a Gradle java-library from the root build.gradle.kts, so core/ itself carries no Gradle file.
include(":core")
include(":app")
