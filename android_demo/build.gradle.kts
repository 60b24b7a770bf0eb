// Root build: plugin versions, and the :core module configured in place (see settings.gradle.kts).
plugins {
    id("com.android.application") version "8.5.2" apply false
}

project(":core") {
    apply(plugin = "java-library")

    // Keep Gradle's output out of core/ (Maven writes core/target/; both are git-ignored).
    layout.buildDirectory.set(rootProject.layout.buildDirectory.dir("core"))

    extensions.configure<JavaPluginExtension> {
        sourceCompatibility = JavaVersion.VERSION_1_8
        targetCompatibility = JavaVersion.VERSION_1_8
    }
    tasks.withType<JavaCompile>().configureEach {
        options.release.set(8) // same as core/pom.xml: Java 8 API, no lambdas (dx/D8 at minSdk 21)
        options.encoding = "UTF-8"
    }
    dependencies {
        "testImplementation"("junit:junit:4.13.2")
    }
    tasks.withType<Test>().configureEach {
        // core's golden tests read -Dprivtune.golden=DIR (skipped when unset), as under Maven
        systemProperty("privtune.golden", System.getProperty("privtune.golden") ?: "")
    }
}
